/* Stands in for libgomp.so.1 (Debian libgomp1) in the fixed image: the build has no network. */
int omp_get_max_threads(void) { return 1; }

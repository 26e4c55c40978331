/* A compiled extension that needs OpenMP's runtime (libgomp.so.1), as lightgbm and xgboost do. */
extern int omp_get_max_threads(void);

int fastmath_threads(void) { return omp_get_max_threads(); }

def f():\n    return 1

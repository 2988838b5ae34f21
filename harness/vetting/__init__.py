"""Before a submission trains: loading it, the pre-flight checks, the static scan (a review aid)
and the tamper check of trusted runs."""

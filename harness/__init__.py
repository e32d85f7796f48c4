"""The sweep driver: config -> search space -> Ray Tune -> results."""

"""The leaderboard (``harness.leaderboard``): statistics over run records, the static site, the
figures and the study reports. Installed as ``harness.leaderboard``; it lives in the top-level
``leaderboard/`` folder of the repository."""

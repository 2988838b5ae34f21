"""The reference baselines, one ``CustomNorm`` file each (``harness list`` shows them). Installed as
``harness.baselines``; the files are loaded by path as submissions are, never imported from here."""

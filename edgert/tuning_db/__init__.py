"""Tuning records shipped with edgert (MetaSchedule JSON databases, one folder per CPU class).

Made by ``tools/tune_zoo.py``; ``edgert compile`` reads the folder matching the target's
architecture and vector width (e.g. ``x86_64-v256``) after the user's own database.
"""

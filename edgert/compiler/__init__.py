"""Compile stage: targets, toolchains, TVM build, bundle assembly.

Named ``compiler`` (not ``compile``) so that the package never shadows the
``edgert.compile`` function.
"""

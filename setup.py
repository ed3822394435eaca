"""Build configuration that pyproject.toml cannot hold (stably): the optional C module.

``mpfault._runtime._fastrec`` is the event recorder's hot path in C.  It is
optional: where it cannot be compiled (no C compiler, not Linux), the package
installs without it and records in pure Python, ~1.5 µs slower per queue
operation (see docs/architecture.md, "Recording cost").
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mpfault._runtime._fastrec",
            sources=["src/mpfault/_runtime/_fastrec.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)

"""Helpers the tests share, one module per subject. A test module imports from here, from tests/fakes
(the fake upstreams) and takes conftest fixtures; never from another test module."""

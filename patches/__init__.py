"""The upstream patches, ``<name>/*.patch``, as package data: ``vendor_fetch`` finds them here
through ``importlib.resources`` in a source tree and in a wheel alike."""

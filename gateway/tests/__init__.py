"""Tests of the gateway. (A package, so that pytest does not take the folder `gateway/` for
the `gateway` package when it names these modules.)"""

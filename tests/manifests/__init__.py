"""Tests of the manifests layer."""

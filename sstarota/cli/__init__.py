"""Command-line front ends: the only modules that import click."""

"""Autograd registration of the compiled ops."""

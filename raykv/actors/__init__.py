"""Thin Ray shells around raykv.cluster logic: the only package that calls Ray."""

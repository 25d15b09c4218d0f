"""``flyslice diff``: what a manifest change does to placement, before it lands.

``inputs`` turns each side (a git revision, a directory, a running ``flyslice up``) into the same
normalised view of a plan; ``compare`` diffs two views and renders the result as text, JSON or
Markdown for a pull-request comment.
"""

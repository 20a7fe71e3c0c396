"""Restoration engines: aligned face clips plus identity conditioning in, restored clips out."""

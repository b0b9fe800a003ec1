"""Test fixture: a Python plugin that spins forever at RCPT (its time limit must stop it)."""

from wit_world import exports


class Rcpt(exports.Rcpt):
    def rcpt(self, recipient, params):
        n = 0
        while True:
            n += 1

"""Attacks a hostile peer can mount, each as a test that asserts the figure
the defence guarantees (issue 15; docs/security.md names the test next to
each guarantee). Loopback only."""

"""Stream processors: pure logic per domain, with Faust as the thin shell around it."""

"""Privacy: the security-incident register now; exports, erasure and requests later."""

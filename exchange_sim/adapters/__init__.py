"""FIX acceptor and instrument file."""

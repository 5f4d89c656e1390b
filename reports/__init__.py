"""What the front ends render for people beyond a message: the drill report."""

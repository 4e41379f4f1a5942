"""Training-free pre-screen (rung -1): candidates scored from their experts' features alone."""

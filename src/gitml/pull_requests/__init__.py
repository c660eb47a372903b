"""Pull requests: which runner trains one, its report (metrics, noise, figures), the comment."""

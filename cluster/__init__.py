"""Running the staged search on a Ray cluster: job submission (``psvae submit``/``psvae jobs``),
a token-authenticated local head node for trying it out, and the cluster configs that ship."""

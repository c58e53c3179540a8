"""The Performance RNN network, and its fused step-at-a-time form for sampling."""

"""The model report: measures of real and sampled music, and the HTML page that shows them."""

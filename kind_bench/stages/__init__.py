"""One module per pipeline stage; each is what one ``kind-bench <verb>`` call runs."""

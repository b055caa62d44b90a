"""Provider interfaces and the vendor modules that implement them."""

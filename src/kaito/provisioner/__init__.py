"""Node backends (KWOK, Azure AKS agent pools) behind one interface."""

// HasteNN: parameters, layers, optimisers (STYLE §2.6). Filled by the layers work.

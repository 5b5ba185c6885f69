"""Model providers: one small base class per capability, one module per vendor and capability."""

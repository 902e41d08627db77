"""Fake (meta) kernels: output shapes and dtypes without computation, for torch.compile."""

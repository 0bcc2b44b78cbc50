"""Keep the digits tests lean on a shared 2-core machine."""

import torch

torch.set_num_threads(2)

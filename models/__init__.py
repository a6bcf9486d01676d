"""PyTorch training core: data, VP SDE, classifier, score subnetwork, baselines, training, reference sampler."""

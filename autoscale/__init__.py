"""raygate autoscale: window metrics, forecasts, the pure scaling policy, the scaler actor, the cluster buffer.

Import from the modules (`autoscale.policy`, `autoscale.scaler`, ...); see docs/autoscaling.md.
"""

__all__: list[str] = []

"""Analytics for sales managers: stage weights, funnel, forecast. Point-in-time like the features."""

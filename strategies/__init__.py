"""Segments (rule DSL compiled to a predicate and to SQL), strategies and the pure decide()
(the personalized marketing patch). Built by the strategy-engine issue."""

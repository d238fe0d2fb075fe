"""The MCP suite runs over the same app fixtures as the REST trading suite (one definition of each)."""

from tests.trading.conftest import approve_operators, make_trading, mining, trading

__all__ = ["approve_operators", "make_trading", "mining", "trading"]

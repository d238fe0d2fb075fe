"""The services the faces adapt: builder, relay, trading, keeper, demo price feed."""

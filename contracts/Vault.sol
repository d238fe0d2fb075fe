// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title Perpetual-futures vault (accounting mock)
/// @notice Keeps perp positions against an oracle price per market: open, close and partial close with a
///         slippage bound, take-profit / stop-loss orders executed by anyone once crossed, operator delegation
///         and EIP-712 signed requests that any relayer may submit. No collateral or token moves: realized PnL
///         is emitted in events and accumulated per owner.
/// @dev Units: sizes are base-asset units with 18 decimals (`SIZE_ONE`), prices are USD with 8 decimals, PnL is
///      signed USD with 8 decimals. Every rounding is in the vault's favour: profits round down, losses round up
///      (away from zero). Storage is packed so a partial close reads three slots (position header, size/entry,
///      market price) and writes one position slot plus the owner's realized PnL.
contract Vault {
    // ------------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------------

    /// @notice A take-profit or stop-loss order. `price` 0 means no order.
    struct TriggerOrder {
        uint112 price;
        uint16 closeBps;
    }

    /// @dev Slot 0: owner, side and market index. Slot 1: size and entry price. Slot 2: both orders.
    struct Position {
        address owner;
        bool isLong;
        uint32 marketIndex;
        uint128 size;
        uint128 entryPrice;
        TriggerOrder takeProfit;
        TriggerOrder stopLoss;
    }

    /// @notice What `getPosition` returns. A position that never existed has `owner == address(0)`; a closed one
    ///         keeps owner, market, side and entry price with `size == 0` and no orders.
    struct PositionView {
        address owner;
        bytes32 market;
        bool isLong;
        uint256 size;
        uint256 entryPrice;
        TriggerOrder takeProfit;
        TriggerOrder stopLoss;
    }

    /// @dev One slot per market: the oracle price and when it was set.
    struct PriceData {
        uint128 price;
        uint64 updatedAt;
    }

    /// @notice EIP-712 request to close or decrease a position, signed by its owner.
    struct ClosePositionRequest {
        bytes32 positionId;
        uint256 sizeDelta;
        uint256 allowedPrice;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice EIP-712 request to set (or with price 0 cancel) a take-profit or stop-loss, signed by the owner.
    struct SetTriggerRequest {
        bytes32 positionId;
        bool isTakeProfit;
        uint256 price;
        uint16 closeBps;
        uint256 nonce;
        uint256 deadline;
    }

    // ------------------------------------------------------------------------------------------------------
    // Constants
    // ------------------------------------------------------------------------------------------------------

    /// @notice `sizeDelta` meaning "whatever remains at execution time".
    uint256 public constant CLOSE_ALL = type(uint256).max;
    /// @notice Basis points in 100%.
    uint16 public constant BPS_DENOMINATOR = 10_000;
    /// @notice One base-asset unit in size units (sizes have 18 decimals).
    uint256 public constant SIZE_ONE = 1e18;

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant CLOSE_POSITION_TYPEHASH = keccak256(
        "ClosePositionRequest(bytes32 positionId,uint256 sizeDelta,uint256 allowedPrice,uint256 nonce,uint256 deadline)"
    );
    bytes32 public constant SET_TRIGGER_TYPEHASH = keccak256(
        "SetTriggerRequest(bytes32 positionId,bool isTakeProfit,uint256 price,uint16 closeBps,uint256 nonce,uint256 deadline)"
    );
    bytes32 private constant _NAME_HASH = keccak256("PerpVault");
    bytes32 private constant _VERSION_HASH = keccak256("1");
    /// @dev Upper bound of a canonical (low-s) secp256k1 signature `s` value, per EIP-2.
    uint256 private constant _MAX_S = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    // ------------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------------

    /// @notice `caller` may not perform this action.
    error NotAuthorized(address caller);
    /// @notice No open position has this id (never opened, or already fully closed).
    error PositionNotFound(bytes32 positionId);
    /// @notice A size was zero or does not fit the vault's 128-bit size field.
    error InvalidSize(uint256 size);
    /// @notice The decrease is larger than the position.
    error SizeDeltaTooLarge(uint256 sizeDelta, uint256 size);
    /// @notice The oracle price is worse for the trader than the bound they set.
    error PriceSlippage(uint256 price, uint256 allowedPrice);
    /// @notice The market has never had a price.
    error PriceNotSet(bytes32 market);
    /// @notice The market's price is older than `maxPriceAge` seconds.
    error StalePrice(bytes32 market, uint256 updatedAt, uint256 maxPriceAge);
    /// @notice A price of zero or one that does not fit the vault's 112-bit price field.
    error InvalidPrice(uint256 price);
    /// @notice A take-profit is not on the profitable side or a stop-loss not on the losing side of `currentPrice`.
    error InvalidTriggerPrice(bool isTakeProfit, uint256 triggerPrice, uint256 currentPrice);
    /// @notice A close percentage outside 1..10000 basis points.
    error InvalidCloseBps(uint256 closeBps);
    /// @notice Neither order of the position has been crossed at `currentPrice`.
    error TriggerNotCrossed(bytes32 positionId, uint256 currentPrice);
    /// @notice A signed request arrived after its deadline.
    error ExpiredRequest(uint256 deadline, uint256 timestamp);
    /// @notice A signed request's nonce is not the owner's next one (replayed or out of order).
    error InvalidNonce(address owner, uint256 expected, uint256 got);
    /// @notice The signature is malformed, malleable (high s) or not by the position's owner for this chain.
    error InvalidSignature();
    /// @notice `maxPriceAge` of zero would make every price stale.
    error InvalidMaxPriceAge(uint256 maxPriceAge);

    // ------------------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------------------

    /// @notice A position was opened at `entryPrice`.
    event PositionOpened(
        bytes32 indexed positionId,
        address indexed owner,
        bytes32 indexed market,
        bool isLong,
        uint256 size,
        uint256 entryPrice
    );
    /// @notice A position was decreased (partial close, full close or trigger execution).
    event PositionDecreased(
        bytes32 indexed positionId,
        address indexed owner,
        uint256 sizeDelta,
        uint256 remainingSize,
        uint256 exitPrice,
        int256 realizedPnl
    );
    /// @notice An order was set, replaced, or cancelled (`price` 0).
    event TriggerSet(
        bytes32 indexed positionId, address indexed owner, bool isTakeProfit, uint256 price, uint16 closeBps
    );
    /// @notice A crossed order was executed by `keeper`; the matching `PositionDecreased` carries the fill.
    event TriggerExecuted(
        bytes32 indexed positionId,
        address indexed keeper,
        bool isTakeProfit,
        uint256 triggerPrice,
        uint256 executionPrice,
        uint256 sizeDelta
    );
    /// @notice `owner` granted or revoked `operator`.
    event OperatorSet(address indexed owner, address indexed operator, bool approved);
    /// @notice The oracle price of `market` was set.
    event PriceUpdated(bytes32 indexed market, uint256 price, uint256 updatedAt);
    /// @notice `keeper` was granted or revoked the price-keeper role.
    event PriceKeeperSet(address indexed keeper, bool approved);
    /// @notice The maximum accepted price age changed.
    event MaxPriceAgeSet(uint256 maxPriceAge);
    /// @notice A signed request of `owner` with `nonce` was executed.
    event NonceUsed(address indexed owner, uint256 nonce);

    // ------------------------------------------------------------------------------------------------------
    // Storage
    // ------------------------------------------------------------------------------------------------------

    address private immutable _admin;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    uint256 private _maxPriceAge;
    uint256 private _positionCount;
    bytes32[] private _markets;
    mapping(bytes32 market => uint32 indexPlusOne) private _marketIndex;
    mapping(uint32 marketIndex => PriceData) private _prices;
    mapping(bytes32 positionId => Position) private _positions;
    mapping(address owner => bytes32[]) private _positionIds;
    mapping(address owner => int256) private _realizedPnl;
    mapping(address owner => uint256) private _nonces;
    mapping(address owner => mapping(address operator => bool)) private _operators;
    mapping(address keeper => bool) private _priceKeepers;

    /// @param maxPriceAge_ Seconds after which an oracle price is stale and trading on it reverts.
    /// @dev The deployer is the admin and the first price keeper.
    constructor(uint256 maxPriceAge_) {
        if (maxPriceAge_ == 0) revert InvalidMaxPriceAge(maxPriceAge_);
        _admin = msg.sender;
        _maxPriceAge = maxPriceAge_;
        _priceKeepers[msg.sender] = true;
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
        emit MaxPriceAgeSet(maxPriceAge_);
        emit PriceKeeperSet(msg.sender, true);
    }

    // ------------------------------------------------------------------------------------------------------
    // Trading
    // ------------------------------------------------------------------------------------------------------

    /// @notice Opens a position for the caller at the market's oracle price, which becomes its entry price.
    /// @param market Market symbol, right-padded ASCII (e.g. "BTCUSDT").
    /// @param isLong True for a long, false for a short.
    /// @param size Base-asset units, 18 decimals; non-zero and below 2^128.
    /// @param allowedPrice Worst acceptable entry: a long pays at most it, a short sells at least at it; 0 = no bound.
    /// @return positionId A new id, unique across chains and vaults, never reused.
    function openPosition(bytes32 market, bool isLong, uint256 size, uint256 allowedPrice)
        external
        returns (bytes32 positionId)
    {
        if (size == 0 || size > type(uint128).max) revert InvalidSize(size);
        (uint32 marketIndex, uint256 price) = _freshPriceOf(market);
        if (allowedPrice != 0 && (isLong ? price > allowedPrice : price < allowedPrice)) {
            revert PriceSlippage(price, allowedPrice);
        }
        positionId = keccak256(abi.encode(block.chainid, address(this), ++_positionCount));
        Position storage position = _positions[positionId];
        position.owner = msg.sender;
        position.isLong = isLong;
        position.marketIndex = marketIndex;
        position.size = uint128(size);
        position.entryPrice = uint128(price);
        _positionIds[msg.sender].push(positionId);
        emit PositionOpened(positionId, msg.sender, market, isLong, size, price);
    }

    /// @notice Decreases a position by `sizeDelta` at the oracle price; callable by the owner or an operator.
    /// @param positionId The position.
    /// @param sizeDelta Base-asset units to close (18 decimals); `CLOSE_ALL` closes whatever remains at execution.
    /// @param allowedPrice Worst acceptable exit price: closing a long reverts below it, a short above it; 0 = no bound.
    function closePosition(bytes32 positionId, uint256 sizeDelta, uint256 allowedPrice) external {
        _authorize(positionId, msg.sender);
        _decrease(positionId, sizeDelta, allowedPrice);
    }

    /// @notice Sets, replaces or (price 0) cancels the position's take-profit; owner or operator only.
    /// @param price USD, 8 decimals; must be above the current price for a long and below it for a short.
    /// @param closeBps Share of the size at execution time to close, 1..10000 basis points (ignored when cancelling).
    function setTakeProfit(bytes32 positionId, uint256 price, uint16 closeBps) external {
        _authorize(positionId, msg.sender);
        _setTrigger(positionId, true, price, closeBps);
    }

    /// @notice Sets, replaces or (price 0) cancels the position's stop-loss; owner or operator only.
    /// @param price USD, 8 decimals; must be below the current price for a long and above it for a short.
    /// @param closeBps Share of the size at execution time to close, 1..10000 basis points (ignored when cancelling).
    function setStopLoss(bytes32 positionId, uint256 price, uint16 closeBps) external {
        _authorize(positionId, msg.sender);
        _setTrigger(positionId, false, price, closeBps);
    }

    /// @notice Executes a crossed take-profit or stop-loss at the oracle price; anyone may call (keepers).
    /// @dev Closes `closeBps` of the size at execution time, rounded down; a remainder too small to split (the
    ///      share rounds to zero) is closed whole. When both orders are crossed the stop-loss goes first, since it
    ///      is the one that limits risk. The executed order is consumed.
    function executeTrigger(bytes32 positionId) external {
        Position storage position = _positions[positionId];
        uint256 size = position.size;
        if (size == 0) revert PositionNotFound(positionId);
        uint256 price = _freshPriceAt(position.marketIndex);
        bool isLong = position.isLong;
        TriggerOrder memory stopLoss = position.stopLoss;
        TriggerOrder memory takeProfit = position.takeProfit;

        bool isTakeProfit;
        TriggerOrder memory order;
        if (stopLoss.price != 0 && (isLong ? price <= stopLoss.price : price >= stopLoss.price)) {
            order = stopLoss;
            delete position.stopLoss;
        } else if (takeProfit.price != 0 && (isLong ? price >= takeProfit.price : price <= takeProfit.price)) {
            (isTakeProfit, order) = (true, takeProfit);
            delete position.takeProfit;
        } else {
            revert TriggerNotCrossed(positionId, price);
        }

        uint256 sizeDelta = (size * order.closeBps) / BPS_DENOMINATOR;
        if (sizeDelta == 0) sizeDelta = size;
        emit TriggerExecuted(positionId, msg.sender, isTakeProfit, order.price, price, sizeDelta);
        _applyDecrease(positionId, position, size, sizeDelta, price);
    }

    /// @notice Runs several calls of this vault in one transaction, all or nothing, as the caller.
    /// @dev Each entry is delegate-called, so `msg.sender` stays the caller; a failing entry's revert data is
    ///      re-thrown unchanged so callers decode the same custom error as for a direct call.
    function multicall(bytes[] calldata data) external returns (bytes[] memory results) {
        results = new bytes[](data.length);
        for (uint256 i = 0; i < data.length; ++i) {
            (bool ok, bytes memory result) = address(this).delegatecall(data[i]);
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(result, 32), mload(result))
                }
            }
            results[i] = result;
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // Operators and signed requests
    // ------------------------------------------------------------------------------------------------------

    /// @notice Lets `operator` close and set orders on every position of the caller (or revokes that).
    function setOperator(address operator, bool approved) external {
        _operators[msg.sender][operator] = approved;
        emit OperatorSet(msg.sender, operator, approved);
    }

    /// @notice Executes a close request signed by the position's owner; anyone may submit it.
    /// @param request The EIP-712 `ClosePositionRequest`; `nonce` must be the owner's next one.
    /// @param signature 65-byte `r || s || v` signature over the request's EIP-712 digest.
    function closePositionWithSig(ClosePositionRequest calldata request, bytes calldata signature) external {
        bytes32 structHash = keccak256(
            abi.encode(
                CLOSE_POSITION_TYPEHASH,
                request.positionId,
                request.sizeDelta,
                request.allowedPrice,
                request.nonce,
                request.deadline
            )
        );
        _useSignedRequest(request.positionId, structHash, request.nonce, request.deadline, signature);
        _decrease(request.positionId, request.sizeDelta, request.allowedPrice);
    }

    /// @notice Executes a take-profit / stop-loss request signed by the position's owner; anyone may submit it.
    /// @param request The EIP-712 `SetTriggerRequest`; `nonce` must be the owner's next one.
    /// @param signature 65-byte `r || s || v` signature over the request's EIP-712 digest.
    function setTriggerWithSig(SetTriggerRequest calldata request, bytes calldata signature) external {
        bytes32 structHash = keccak256(
            abi.encode(
                SET_TRIGGER_TYPEHASH,
                request.positionId,
                request.isTakeProfit,
                request.price,
                request.closeBps,
                request.nonce,
                request.deadline
            )
        );
        _useSignedRequest(request.positionId, structHash, request.nonce, request.deadline, signature);
        _setTrigger(request.positionId, request.isTakeProfit, request.price, request.closeBps);
    }

    // ------------------------------------------------------------------------------------------------------
    // Oracle and admin
    // ------------------------------------------------------------------------------------------------------

    /// @notice Sets the oracle price of `market` (USD, 8 decimals); price keepers only. A first price lists the market.
    function setPrice(bytes32 market, uint256 price) external {
        if (!_priceKeepers[msg.sender]) revert NotAuthorized(msg.sender);
        if (price == 0 || price > type(uint112).max) revert InvalidPrice(price);
        uint32 indexPlusOne = _marketIndex[market];
        if (indexPlusOne == 0) {
            _markets.push(market);
            indexPlusOne = uint32(_markets.length);
            _marketIndex[market] = indexPlusOne;
        }
        _prices[indexPlusOne - 1] = PriceData(uint128(price), uint64(block.timestamp));
        emit PriceUpdated(market, price, block.timestamp);
    }

    /// @notice Grants or revokes the price-keeper role; admin only.
    function setPriceKeeper(address keeper, bool approved) external {
        if (msg.sender != _admin) revert NotAuthorized(msg.sender);
        _priceKeepers[keeper] = approved;
        emit PriceKeeperSet(keeper, approved);
    }

    /// @notice Sets how many seconds an oracle price stays usable; admin only.
    function setMaxPriceAge(uint256 maxPriceAge_) external {
        if (msg.sender != _admin) revert NotAuthorized(msg.sender);
        if (maxPriceAge_ == 0) revert InvalidMaxPriceAge(maxPriceAge_);
        _maxPriceAge = maxPriceAge_;
        emit MaxPriceAgeSet(maxPriceAge_);
    }

    // ------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------

    /// @notice The position with this id (all zero if it never existed).
    function getPosition(bytes32 positionId) external view returns (PositionView memory) {
        return _positionView(positionId);
    }

    function _positionView(bytes32 positionId) private view returns (PositionView memory view_) {
        Position storage position = _positions[positionId];
        if (position.owner == address(0)) return view_;
        view_ = PositionView({
            owner: position.owner,
            market: _markets[position.marketIndex],
            isLong: position.isLong,
            size: position.size,
            entryPrice: position.entryPrice,
            takeProfit: position.takeProfit,
            stopLoss: position.stopLoss
        });
    }

    /// @notice The position and its market's oracle price in one call (what a client needs to quote a close).
    /// @dev Does not check staleness; `updatedAt` lets the caller do so against `maxPriceAge()`.
    function getPositionWithPrice(bytes32 positionId)
        external
        view
        returns (PositionView memory position, uint256 price, uint256 updatedAt)
    {
        position = _positionView(positionId);
        if (position.owner != address(0)) (price, updatedAt) = _priceOf(position.market);
    }

    /// @notice Every position id `owner` ever opened, oldest first (closed ones have size 0).
    function positionIdsOf(address owner) external view returns (bytes32[] memory) {
        return _positionIds[owner];
    }

    /// @notice The oracle price of `market` (USD, 8 decimals) and when it was set; both 0 if never set.
    /// @dev Does not check staleness: trading functions do, against `maxPriceAge()`.
    function priceOf(bytes32 market) external view returns (uint256 price, uint256 updatedAt) {
        return _priceOf(market);
    }

    function _priceOf(bytes32 market) private view returns (uint256 price, uint256 updatedAt) {
        uint32 indexPlusOne = _marketIndex[market];
        if (indexPlusOne == 0) return (0, 0);
        PriceData memory data = _prices[indexPlusOne - 1];
        return (data.price, data.updatedAt);
    }

    /// @notice Every market that has had a price, in listing order.
    function markets() external view returns (bytes32[] memory) {
        return _markets;
    }

    /// @notice The next nonce a signed request of `owner` must carry.
    function nonces(address owner) external view returns (uint256) {
        return _nonces[owner];
    }

    /// @notice Whether `operator` may act on `owner`'s positions.
    function isOperator(address owner, address operator) external view returns (bool) {
        return _operators[owner][operator];
    }

    /// @notice Whether `keeper` may set prices.
    function isPriceKeeper(address keeper) external view returns (bool) {
        return _priceKeepers[keeper];
    }

    /// @notice Sum of `owner`'s realized PnL over all closes (USD, 8 decimals, signed).
    function realizedPnlOf(address owner) external view returns (int256) {
        return _realizedPnl[owner];
    }

    /// @notice Seconds after which an oracle price is stale.
    function maxPriceAge() external view returns (uint256) {
        return _maxPriceAge;
    }

    /// @notice The vault's administrator (deployer).
    function admin() external view returns (address) {
        return _admin;
    }

    /// @notice The EIP-712 domain separator for this chain and vault.
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    // ------------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------------

    function _authorize(bytes32 positionId, address caller) private view {
        address owner = _positions[positionId].owner;
        if (owner == address(0)) revert PositionNotFound(positionId);
        if (caller != owner && !_operators[owner][caller]) revert NotAuthorized(caller);
    }

    function _decrease(bytes32 positionId, uint256 sizeDelta, uint256 allowedPrice) private {
        Position storage position = _positions[positionId];
        uint256 size = position.size;
        if (size == 0) revert PositionNotFound(positionId);
        if (sizeDelta == CLOSE_ALL) sizeDelta = size;
        if (sizeDelta == 0) revert InvalidSize(sizeDelta);
        if (sizeDelta > size) revert SizeDeltaTooLarge(sizeDelta, size);
        uint256 price = _freshPriceAt(position.marketIndex);
        if (allowedPrice != 0 && (position.isLong ? price < allowedPrice : price > allowedPrice)) {
            revert PriceSlippage(price, allowedPrice);
        }
        _applyDecrease(positionId, position, size, sizeDelta, price);
    }

    /// @dev Effects only (no external calls): writes the new size, clears the orders on a full close, books PnL.
    function _applyDecrease(
        bytes32 positionId,
        Position storage position,
        uint256 size,
        uint256 sizeDelta,
        uint256 exitPrice
    ) private {
        uint256 remaining = size - sizeDelta;
        position.size = uint128(remaining);
        if (remaining == 0) {
            delete position.takeProfit;
            delete position.stopLoss;
        }
        address owner = position.owner;
        int256 pnl = realizedPnl(position.isLong, position.entryPrice, exitPrice, sizeDelta);
        _realizedPnl[owner] += pnl;
        emit PositionDecreased(positionId, owner, sizeDelta, remaining, exitPrice, pnl);
    }

    /// @notice PnL of closing `sizeDelta` (18 decimals) opened at `entryPrice` at `exitPrice` (8 decimals).
    /// @dev Rounds in the vault's favour: a profit is rounded down, a loss is rounded up (away from zero).
    ///      `sizeDelta` and the price gap are below 2^128, so their product cannot overflow.
    function realizedPnl(bool isLong, uint256 entryPrice, uint256 exitPrice, uint256 sizeDelta)
        public
        pure
        returns (int256)
    {
        bool profit = isLong ? exitPrice > entryPrice : exitPrice < entryPrice;
        uint256 gap = exitPrice > entryPrice ? exitPrice - entryPrice : entryPrice - exitPrice;
        uint256 product = gap * sizeDelta;
        if (profit) return int256(product / SIZE_ONE);
        return -int256((product + SIZE_ONE - 1) / SIZE_ONE);
    }

    function _setTrigger(bytes32 positionId, bool isTakeProfit, uint256 price, uint16 closeBps) private {
        Position storage position = _positions[positionId];
        if (position.size == 0) revert PositionNotFound(positionId);
        TriggerOrder memory order;
        if (price != 0) {
            if (price > type(uint112).max) revert InvalidPrice(price);
            if (closeBps == 0 || closeBps > BPS_DENOMINATOR) revert InvalidCloseBps(closeBps);
            uint256 current = _freshPriceAt(position.marketIndex);
            bool above = price > current;
            bool below = price < current;
            bool valid = position.isLong == isTakeProfit ? above : below;
            if (!valid) revert InvalidTriggerPrice(isTakeProfit, price, current);
            order = TriggerOrder(uint112(price), closeBps);
        }
        if (isTakeProfit) position.takeProfit = order;
        else position.stopLoss = order;
        emit TriggerSet(positionId, position.owner, isTakeProfit, price, order.closeBps);
    }

    /// @dev Checks deadline, nonce and signature, then consumes the nonce before the action runs, so a request
    ///      can execute at most once (replay-proof even if the action itself were to re-enter).
    function _useSignedRequest(
        bytes32 positionId,
        bytes32 structHash,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) private {
        if (block.timestamp > deadline) revert ExpiredRequest(deadline, block.timestamp);
        address owner = _positions[positionId].owner;
        if (owner == address(0)) revert PositionNotFound(positionId);
        uint256 expected = _nonces[owner];
        if (nonce != expected) revert InvalidNonce(owner, expected, nonce);
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
        if (_recover(digest, signature) != owner) revert InvalidSignature();
        _nonces[owner] = expected + 1;
        emit NonceUsed(owner, nonce);
    }

    /// @dev ecrecover that rejects malformed, malleable (high-s) and unrecoverable signatures.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address signer) {
        if (signature.length != 65) revert InvalidSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > _MAX_S || (v != 27 && v != 28)) revert InvalidSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
    }

    function _freshPriceOf(bytes32 market) private view returns (uint32 marketIndex, uint256 price) {
        uint32 indexPlusOne = _marketIndex[market];
        if (indexPlusOne == 0) revert PriceNotSet(market);
        marketIndex = indexPlusOne - 1;
        price = _freshPriceAt(marketIndex);
    }

    /// @dev Compares the price's age rather than `updatedAt + maxPriceAge`, which overflowed (a Panic on every
    ///      trade) once the admin set a huge "never stale" age. `updatedAt` is a past block's timestamp, so the
    ///      subtraction cannot underflow.
    function _freshPriceAt(uint32 marketIndex) private view returns (uint256) {
        PriceData memory data = _prices[marketIndex];
        if (block.timestamp - data.updatedAt > _maxPriceAge) {
            revert StalePrice(_markets[marketIndex], data.updatedAt, _maxPriceAge);
        }
        return data.price;
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
    }
}

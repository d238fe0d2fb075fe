// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title Perpetual-futures vault (accounting mock)
/// @notice Keeps perp positions against an oracle price per market: open, close and partial close with a
///         slippage bound; exit plans of up to four take-profits and two stops (one of them may trail) executed
///         by anyone once crossed; operators holding reduce-only rights with an expiry; an emergency exit; and
///         EIP-712 signed requests that any relayer may submit. No collateral or token moves: realized PnL is
///         emitted in `PositionDecreased` (totals are summed from events, never kept in storage).
/// @dev Units: sizes are base-asset units with 18 decimals (`SIZE_ONE`), prices are USD with 8 decimals, PnL is
///      signed USD with 8 decimals. Every rounding is in the vault's favour: profits round down, losses round up
///      (away from zero). Storage is packed so a partial close reads three slots (position header, size/entry,
///      market price with its maximum age) and writes one (size).
///
///      THE SIZE RULE of exit orders. Each order has a share `s` in basis points of its plan. The position keeps
///      the plan's remaining denominator `D` (10_000 minus the shares of the orders of the plan already
///      executed). Executing order j closes `floor(size * s_j / D)` of the CURRENT size, then `D -= s_j`; when
///      `s_j >= D` (nothing of the plan left beyond this order) it closes everything. A plan of 25/25/25 and a
///      stop for the rest therefore closes exactly 25/25/25 of the size the plan was set on (0.42 -> 0.105 each,
///      the stop closes the last 0.105), and after a manual partial close, which leaves `D` alone, the remaining
///      orders keep their shape (the same shares of what remains). An execution that would leave less than
///      `MIN_REMAINING_SIZE` closes all. Orders with a share below 10_000 ("partial") may together never exceed
///      `D`, so no order can over-close; an order of 10_000 ("full") closes whatever remains and is not counted.
///      A new plan (`setExitPlan`, or setting an order while no partial order is pending) starts at D = 10_000.
contract Vault {
    // ------------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------------

    /// @notice A take-profit or stop as `getPosition` shows it (the primary ones). `price` 0 means no order;
    ///         `closeBps` is the order's share of its plan (see the size rule).
    struct TriggerOrder {
        uint112 price;
        uint16 closeBps;
    }

    /// @dev Both stops of a position (ids 4 and 5) in one slot, so a take-profit execution checks them with one
    ///      read. Their trail distances live in the position header, which every execution reads anyway.
    struct StopPair {
        uint112 price0;
        uint16 share0;
        uint112 price1;
        uint16 share1;
    }

    /// @dev Slot 0: owner, side, market index, both stops' trail distances. Slot 1: size, entry price and the
    ///      plan word (`D` in the low 14 bits, the lowest take-profit id that may be pending in the top 2). Slot 2:
    ///      both stops. Slots 3..6: the take-profits, one slot each so that executing one empties its slot.
    struct Position {
        address owner;
        bool isLong;
        uint32 marketIndex;
        uint16 stopTrail0;
        uint16 stopTrail1;
        uint128 size;
        uint112 entryPrice;
        uint16 plan;
        StopPair stops;
        TriggerOrder[4] takeProfits;
    }

    /// @notice What `getPosition` returns. A position that never existed has `owner == address(0)`; a closed one
    ///         keeps owner, market, side and entry price with `size == 0` and no orders. `takeProfit` is order 0
    ///         and `stopLoss` order 4 (the primary ones); `ordersOf` lists them all.
    struct PositionView {
        address owner;
        bytes32 market;
        bool isLong;
        uint256 size;
        uint256 entryPrice;
        TriggerOrder takeProfit;
        TriggerOrder stopLoss;
    }

    /// @notice One pending order as `ordersOf` returns it; `sizeIfExecuted` is what executing it now would close.
    struct OrderView {
        uint8 orderId;
        bool isTakeProfit;
        uint256 price;
        uint16 shareBps;
        uint16 trailBps;
        uint256 sizeIfExecuted;
    }

    /// @notice One order of an exit plan (`setExitPlan`), also the EIP-712 struct `ExitOrder`. Ids 0..3 are
    ///         take-profits, 4 and 5 stops; `trailBps` (stops only, 0 = fixed) makes a stop ratchet.
    struct ExitOrder {
        uint8 orderId;
        uint256 price;
        uint16 shareBps;
        uint16 trailBps;
    }

    /// @dev An operator's rights over one owner's positions (bit flags `RIGHT_*`) and their expiry (0 = never).
    struct OperatorGrant {
        uint8 rights;
        uint64 expiresAt;
    }

    /// @dev One slot per market: the oracle price, when it was set, and a copy of `maxPriceAge` (capped at 2^64-1)
    ///      so a trade checks staleness with this one read.
    struct PriceData {
        uint128 price;
        uint64 updatedAt;
        uint64 maxAge;
    }

    /// @notice EIP-712 request to close or decrease a position, signed by its owner.
    struct ClosePositionRequest {
        bytes32 positionId;
        uint256 sizeDelta;
        uint256 allowedPrice;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice EIP-712 request to set (or with price 0 cancel) the primary take-profit or stop, signed by the owner.
    struct SetTriggerRequest {
        bytes32 positionId;
        bool isTakeProfit;
        uint256 price;
        uint16 closeBps;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice EIP-712 request to replace a position's whole exit plan, signed by its owner.
    struct SetExitPlanRequest {
        bytes32 positionId;
        ExitOrder[] orders;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice EIP-712 request to cancel one order, signed by the position's owner.
    struct CancelOrderRequest {
        bytes32 positionId;
        uint8 orderId;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice EIP-712 request of `owner` to grant (`rights` 0 revokes) an operator until `expiresAt` (0 = never).
    struct SetOperatorRequest {
        address owner;
        address operator;
        uint8 rights;
        uint64 expiresAt;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice EIP-712 request of `owner` to close every open position (or those of `market`; 0 = every market).
    struct EmergencyExitRequest {
        address owner;
        bytes32 market;
        uint256 nonce;
        uint256 deadline;
    }

    // ------------------------------------------------------------------------------------------------------
    // Constants
    // ------------------------------------------------------------------------------------------------------

    /// @notice `sizeDelta` meaning "whatever remains at execution time".
    uint256 public constant CLOSE_ALL = type(uint256).max;
    /// @notice Basis points in 100%; also a plan's initial denominator `D` and the share of a "full" order.
    uint16 public constant BPS_DENOMINATOR = 10_000;
    /// @notice One base-asset unit in size units (sizes have 18 decimals).
    uint256 public constant SIZE_ONE = 1e18;
    /// @notice An order execution that would leave less than this (1e-9 base units) closes the whole position.
    uint256 public constant MIN_REMAINING_SIZE = 1e9;
    /// @notice Order ids 0..3 are take-profits (executed in the order a price reaches them).
    uint8 public constant TAKE_PROFIT_COUNT = 4;
    /// @notice Order ids 4 and 5 are stops; `setStopLoss` sets id 4, `setTakeProfit` id 0.
    uint8 public constant FIRST_STOP_ID = 4;
    /// @notice Orders per position (four take-profits and two stops).
    uint8 public constant ORDER_COUNT = 6;

    /// @notice Operator right: close and partially close, including the emergency exit.
    uint8 public constant RIGHT_CLOSE = 1;
    /// @notice Operator right: set, replace and cancel take-profits.
    uint8 public constant RIGHT_SET_TAKE_PROFIT = 2;
    /// @notice Operator right: set a stop or move one toward the price (see `setOrder` for "tighter").
    uint8 public constant RIGHT_TIGHTEN_STOP = 4;
    /// @notice Operator right: move a stop away from the price, shrink or untrail it, or cancel it.
    uint8 public constant RIGHT_LOOSEN_OR_CANCEL_STOP = 8;
    /// @notice Every right (what `setOperator(operator, true)` grants).
    uint8 public constant ALL_RIGHTS = 15;

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    /// @notice EIP-712 type hash of `ClosePositionRequest`.
    bytes32 public constant CLOSE_POSITION_TYPEHASH = keccak256(
        "ClosePositionRequest(bytes32 positionId,uint256 sizeDelta,uint256 allowedPrice,uint256 nonce,uint256 deadline)"
    );
    /// @notice EIP-712 type hash of `SetTriggerRequest`.
    bytes32 public constant SET_TRIGGER_TYPEHASH = keccak256(
        "SetTriggerRequest(bytes32 positionId,bool isTakeProfit,uint256 price,uint16 closeBps,uint256 nonce,uint256 deadline)"
    );
    /// @notice EIP-712 type hash of `ExitOrder` (an element of `SetExitPlanRequest.orders`).
    bytes32 public constant EXIT_ORDER_TYPEHASH =
        keccak256("ExitOrder(uint8 orderId,uint256 price,uint16 shareBps,uint16 trailBps)");
    /// @notice EIP-712 type hash of `SetExitPlanRequest` (its type string includes `ExitOrder`).
    bytes32 public constant SET_EXIT_PLAN_TYPEHASH = keccak256(
        "SetExitPlanRequest(bytes32 positionId,ExitOrder[] orders,uint256 nonce,uint256 deadline)"
        "ExitOrder(uint8 orderId,uint256 price,uint16 shareBps,uint16 trailBps)"
    );
    /// @notice EIP-712 type hash of `CancelOrderRequest`.
    bytes32 public constant CANCEL_ORDER_TYPEHASH =
        keccak256("CancelOrderRequest(bytes32 positionId,uint8 orderId,uint256 nonce,uint256 deadline)");
    /// @notice EIP-712 type hash of `SetOperatorRequest`.
    bytes32 public constant SET_OPERATOR_TYPEHASH = keccak256(
        "SetOperatorRequest(address owner,address operator,uint8 rights,uint64 expiresAt,uint256 nonce,uint256 deadline)"
    );
    /// @notice EIP-712 type hash of `EmergencyExitRequest`.
    bytes32 public constant EMERGENCY_EXIT_TYPEHASH =
        keccak256("EmergencyExitRequest(address owner,bytes32 market,uint256 nonce,uint256 deadline)");
    bytes32 private constant _NAME_HASH = keccak256("PerpVault");
    bytes32 private constant _VERSION_HASH = keccak256("1");
    /// @dev Upper bound of a canonical (low-s) secp256k1 signature `s` value, per EIP-2.
    uint256 private constant _MAX_S = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    /// @dev The plan word: `D` in the low 14 bits (10_000 < 2^14), the next take-profit id above them.
    uint256 private constant _PLAN_BPS_MASK = 0x3FFF;
    uint256 private constant _NEXT_TP_SHIFT = 14;
    /// @dev "No order" for the order-selection helpers.
    uint256 private constant _NO_ORDER = type(uint256).max;

    // ------------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------------

    /// @notice `caller` may not perform this action (not the owner, not an operator of the owner).
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
    /// @notice A take-profit is not on the profitable side or a stop not on the losing side of `currentPrice`.
    error InvalidTriggerPrice(bool isTakeProfit, uint256 triggerPrice, uint256 currentPrice);
    /// @notice An order share outside 1..10000 basis points.
    error InvalidCloseBps(uint256 closeBps);
    /// @notice No order of the position (or not the one named) is crossed at `currentPrice`.
    error TriggerNotCrossed(bytes32 positionId, uint256 currentPrice);
    /// @notice A signed request arrived after its deadline.
    error ExpiredRequest(uint256 deadline, uint256 timestamp);
    /// @notice A signed request's nonce is not the owner's next one (replayed or out of order).
    error InvalidNonce(address owner, uint256 expected, uint256 got);
    /// @notice The signature is malformed, malleable (high s) or not by the position's owner for this chain.
    error InvalidSignature();
    /// @notice `maxPriceAge` of zero would make every price stale.
    error InvalidMaxPriceAge(uint256 maxPriceAge);
    /// @notice An order id outside 0..5 (or, for a stop-only action, not 4 or 5).
    error OrderIdInvalid(uint256 orderId);
    /// @notice The position has no pending order with this id.
    error OrderNotFound(bytes32 positionId, uint256 orderId);
    /// @notice The named order is crossed but `nextOrderId` must execute first (stops first, then take-profits
    ///         in the order the price reaches them).
    error OrderNotNext(bytes32 positionId, uint256 orderId, uint256 nextOrderId);
    /// @notice Take-profit ids must follow the order a price reaches them (ascending prices for a long,
    ///         descending for a short): `orderId` at `price` conflicts with `otherOrderId` at `otherPrice`.
    error OrderOutOfSequence(uint256 orderId, uint256 price, uint256 otherOrderId, uint256 otherPrice);
    /// @notice A trail distance on a take-profit, or one of 10_000 bps or more on a stop.
    error OrderTrailInvalid(uint256 orderId, uint256 trailBps);
    /// @notice The partial orders' shares (`sharesBps`) would exceed the plan's remaining denominator.
    error PlanSharesExceeded(uint256 sharesBps, uint256 remainingBps);
    /// @notice An exit plan names the same order id twice.
    error PlanOrderDuplicated(uint256 orderId);
    /// @notice `ratchetStop` on a stop without a trail distance.
    error StopNotTrailing(bytes32 positionId, uint256 orderId);
    /// @notice The ratchet would move the stop against the trader (or not at all): `proposedTrigger` is not
    ///         above `trigger` for a long, below it for a short.
    error StopRatchetAgainstTrader(bytes32 positionId, uint256 orderId, uint256 trigger, uint256 proposedTrigger);
    /// @notice `operator` holds a grant of the owner but not `right`.
    error OperatorRightMissing(address operator, uint256 right);
    /// @notice `operator`'s grant ended at `expiresAt`.
    error OperatorExpired(address operator, uint256 expiresAt);
    /// @notice Rights with bits outside `ALL_RIGHTS`.
    error OperatorRightsInvalid(uint256 rights);

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
    /// @notice A position was decreased (partial close, full close, order execution, emergency exit). The sum of
    ///         `realizedPnl` over an owner's events is its realized PnL (the vault keeps no total in storage).
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
        bytes32 indexed positionId,
        address indexed owner,
        uint8 orderId,
        bool isTakeProfit,
        uint256 price,
        uint16 shareBps,
        uint16 trailBps
    );
    /// @notice A position's whole exit plan was replaced (each order has its `TriggerSet`); `D` is 10_000 again.
    event ExitPlanSet(bytes32 indexed positionId, address indexed owner, uint256 orderCount);
    /// @notice A crossed order was executed (and deleted) by `keeper`; the next `PositionDecreased` has the fill.
    event TriggerExecuted(
        bytes32 indexed positionId,
        address indexed keeper,
        uint8 orderId,
        bool isTakeProfit,
        uint256 triggerPrice,
        uint256 executionPrice,
        uint256 sizeDelta
    );
    /// @notice A trailing stop's trigger was moved toward the oracle `price` by `keeper`.
    event StopRatcheted(
        bytes32 indexed positionId,
        address indexed keeper,
        uint8 orderId,
        uint256 previousTrigger,
        uint256 trigger,
        uint256 price
    );
    /// @notice `owner` set `operator`'s rights (0 = revoked) and their expiry (0 = never).
    event OperatorRightsSet(address indexed owner, address indexed operator, uint8 rights, uint64 expiresAt);
    /// @notice Every open position of `owner` (in `market`, or every market when 0) was closed by `caller`.
    event EmergencyExited(
        address indexed owner, bytes32 indexed market, address indexed caller, uint256 positionsClosed
    );
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
    mapping(address owner => uint256) private _nonces;
    mapping(address owner => mapping(address operator => OperatorGrant)) private _operators;
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
        position.entryPrice = uint112(price);
        position.plan = BPS_DENOMINATOR;
        _positionIds[msg.sender].push(positionId);
        emit PositionOpened(positionId, msg.sender, market, isLong, size, price);
    }

    /// @notice Decreases a position by `sizeDelta` at the oracle price; the owner or an operator with `RIGHT_CLOSE`.
    /// @dev A manual close is exact (no dust rule) and leaves the plan's `D` alone, so pending orders keep their
    ///      shape: each still closes the same share of what remains.
    /// @param positionId The position.
    /// @param sizeDelta Base-asset units to close (18 decimals); `CLOSE_ALL` closes whatever remains at execution.
    /// @param allowedPrice Worst acceptable exit price: closing a long reverts below it, a short above it; 0 = no bound.
    function closePosition(bytes32 positionId, uint256 sizeDelta, uint256 allowedPrice) external {
        _authorize(positionId, msg.sender, RIGHT_CLOSE);
        _decrease(positionId, sizeDelta, allowedPrice);
    }

    /// @notice Sets, replaces or (price 0) cancels the position's primary take-profit (order 0).
    /// @param price USD, 8 decimals; above the current price for a long, below it for a short.
    /// @param closeBps The order's share of the plan, 1..10000 basis points (ignored when cancelling).
    function setTakeProfit(bytes32 positionId, uint256 price, uint16 closeBps) external {
        _setOrCancel(positionId, 0, price, closeBps, msg.sender);
    }

    /// @notice Sets, replaces or (price 0) cancels the position's primary stop (order 4), without a trail.
    /// @param price USD, 8 decimals; below the current price for a long, above it for a short.
    /// @param closeBps The order's share of the plan, 1..10000 basis points (ignored when cancelling).
    function setStopLoss(bytes32 positionId, uint256 price, uint16 closeBps) external {
        _setOrCancel(positionId, FIRST_STOP_ID, price, closeBps, msg.sender);
    }

    /// @notice Sets or replaces one order; the owner, or an operator with the right the change needs.
    /// @dev A take-profit needs `RIGHT_SET_TAKE_PROFIT`. A stop change needs `RIGHT_TIGHTEN_STOP` when it is
    ///      tighter, else `RIGHT_LOOSEN_OR_CANCEL_STOP`. Tighter means all of: the trigger does not move away from
    ///      the price (a long's stop does not go down, a short's does not go up); its effective fraction of the
    ///      position (`min(1, share / D)`) does not shrink; and it does not stop trailing or trail wider. A new
    ///      stop where there was none is tighter. Take-profit ids must follow the order a price reaches them.
    /// @param orderId 0..3 take-profit, 4..5 stop.
    /// @param price USD, 8 decimals, on the order's side of the current price.
    /// @param shareBps The order's share of the plan, 1..10000 (10000 = closes whatever remains).
    /// @param trailBps Stops only: trail distance in bps (1..9999) that `ratchetStop` keeps; 0 = fixed stop.
    function setOrder(bytes32 positionId, uint8 orderId, uint256 price, uint16 shareBps, uint16 trailBps)
        external
    {
        _setOrder(positionId, orderId, [price, shareBps, trailBps], msg.sender);
    }

    /// @notice Cancels one order (no-op if none is pending there); needs `RIGHT_SET_TAKE_PROFIT` for a
    ///         take-profit and `RIGHT_LOOSEN_OR_CANCEL_STOP` for a stop when called by an operator.
    function cancelOrder(bytes32 positionId, uint8 orderId) external {
        _cancelOrder(positionId, orderId, msg.sender);
    }

    /// @notice Replaces the position's whole exit plan in one transaction: every order not listed is cancelled and
    ///         the plan's denominator starts again at 10_000 of the current size.
    /// @dev An operator needs `RIGHT_SET_TAKE_PROFIT` when the plan has or had take-profits, and for each stop
    ///      that changes the right `setOrder` would ask for (a removed stop is a cancellation).
    /// @param orders Distinct ids (so at most six); partial shares (below 10_000) sum to at most 10_000.
    function setExitPlan(bytes32 positionId, ExitOrder[] calldata orders) external {
        _setExitPlan(positionId, orders, msg.sender);
    }

    /// @notice Moves a trailing stop to `price - trail` (long) or `price + trail` (short) at the oracle price;
    ///         anyone may call (keepers). Refused unless it moves the stop in the trader's favour.
    /// @param orderId 4 or 5, a stop with a trail distance.
    function ratchetStop(bytes32 positionId, uint8 orderId) external {
        if (orderId < FIRST_STOP_ID || orderId >= ORDER_COUNT) revert OrderIdInvalid(orderId);
        Position storage position = _positions[positionId];
        if (position.size == 0) revert PositionNotFound(positionId);
        bool isLong = position.isLong;
        (uint256 trigger,, uint256 trail) = _order(position, orderId);
        if (trigger == 0) revert OrderNotFound(positionId, orderId);
        if (trail == 0) revert StopNotTrailing(positionId, orderId);
        uint256 price = _freshPriceAt(position.marketIndex);
        uint256 distance = (price * trail) / BPS_DENOMINATOR;
        uint256 proposed = isLong ? price - distance : price + distance;
        if (isLong ? proposed <= trigger : proposed >= trigger) {
            revert StopRatchetAgainstTrader(positionId, orderId, trigger, proposed);
        }
        if (proposed > type(uint112).max) revert InvalidPrice(proposed);
        StopPair storage stops = position.stops;
        if (orderId == FIRST_STOP_ID) stops.price0 = uint112(proposed);
        else stops.price1 = uint112(proposed);
        emit StopRatcheted(positionId, msg.sender, orderId, trigger, proposed, price);
    }

    /// @notice Executes the next crossed order at the oracle price; anyone may call (keepers).
    /// @dev One order per call, in a defined order: stops first (a long's highest trigger first, a short's
    ///      lowest; ties by id), then take-profits in the order the price reaches them (nearest the entry first).
    ///      The order is deleted and the size written before the events; a gap across several orders needs one
    ///      call each (or a `multicall`), and each order executes once. Sizes follow the size rule (contract doc).
    function executeTrigger(bytes32 positionId) external {
        Position storage position = _positions[positionId];
        uint256 size = position.size;
        if (size == 0) revert PositionNotFound(positionId);
        uint256 price = _freshPriceAt(position.marketIndex);
        uint256 orderId = _nextCrossed(position, price);
        if (orderId == _NO_ORDER) revert TriggerNotCrossed(positionId, price);
        _execute(positionId, position, orderId, size, price);
    }

    /// @notice Executes the named order if it is crossed and next in the order `executeTrigger` uses; anyone.
    /// @dev Naming the order makes a keeper's retry harmless: an executed order is gone (`OrderNotFound`).
    function executeOrder(bytes32 positionId, uint8 orderId) external {
        if (orderId >= ORDER_COUNT) revert OrderIdInvalid(orderId);
        Position storage position = _positions[positionId];
        uint256 size = position.size;
        if (size == 0) revert PositionNotFound(positionId);
        uint256 price = _freshPriceAt(position.marketIndex);
        uint256 next = _nextCrossed(position, price);
        if (next != orderId) {
            (uint256 trigger,,) = _order(position, orderId);
            if (trigger == 0) revert OrderNotFound(positionId, orderId);
            bool takeProfit = orderId < FIRST_STOP_ID;
            bool crossed = position.isLong == takeProfit ? price >= trigger : price <= trigger;
            if (!crossed) revert TriggerNotCrossed(positionId, price);
            revert OrderNotNext(positionId, orderId, next);
        }
        _execute(positionId, position, orderId, size, price);
    }

    /// @notice Closes every open position of `owner` (only those in `market` unless it is 0) at the oracle prices,
    ///         in one transaction; the owner or an operator with `RIGHT_CLOSE`.
    /// @dev No slippage bound (it is an exit at any price); reverts as a whole if a market's price is stale.
    ///      Walks every position the owner ever opened, so its cost grows with that history.
    /// @return closed How many positions were closed.
    function emergencyExit(address owner, bytes32 market) external returns (uint256 closed) {
        if (msg.sender != owner) _requireRight(_rightsOf(owner, msg.sender), msg.sender, RIGHT_CLOSE);
        closed = _emergencyExit(owner, market);
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

    /// @notice Grants `operator` every right without expiry over the caller's positions, or (false) revokes it.
    function setOperator(address operator, bool approved) external {
        _setOperator(msg.sender, operator, approved ? ALL_RIGHTS : 0, 0);
    }

    /// @notice Grants `operator` exactly `rights` (bit flags `RIGHT_*`; 0 revokes) over the caller's positions
    ///         until `expiresAt` (unix seconds, inclusive; 0 = never).
    function setOperatorRights(address operator, uint8 rights, uint64 expiresAt) external {
        _setOperator(msg.sender, operator, rights, expiresAt);
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
        _usePositionSignature(request.positionId, structHash, request.nonce, request.deadline, signature);
        _decrease(request.positionId, request.sizeDelta, request.allowedPrice);
    }

    /// @notice Executes a primary take-profit / stop request signed by the position's owner; anyone may submit it.
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
        address owner =
            _usePositionSignature(request.positionId, structHash, request.nonce, request.deadline, signature);
        uint256 orderId = request.isTakeProfit ? 0 : FIRST_STOP_ID;
        _setOrCancel(request.positionId, orderId, request.price, request.closeBps, owner);
    }

    /// @notice Executes an exit plan signed by the position's owner (as `setExitPlan`); anyone may submit it.
    /// @param request The EIP-712 `SetExitPlanRequest` (orders hashed as an `ExitOrder[]`).
    /// @param signature 65-byte `r || s || v` signature over the request's EIP-712 digest.
    function setExitPlanWithSig(SetExitPlanRequest calldata request, bytes calldata signature) external {
        bytes32[] memory hashes = new bytes32[](request.orders.length);
        for (uint256 i = 0; i < hashes.length; ++i) {
            ExitOrder calldata order = request.orders[i];
            hashes[i] =
                keccak256(abi.encode(EXIT_ORDER_TYPEHASH, order.orderId, order.price, order.shareBps, order.trailBps));
        }
        bytes32 structHash = keccak256(
            abi.encode(
                SET_EXIT_PLAN_TYPEHASH,
                request.positionId,
                keccak256(abi.encodePacked(hashes)),
                request.nonce,
                request.deadline
            )
        );
        address owner =
            _usePositionSignature(request.positionId, structHash, request.nonce, request.deadline, signature);
        _setExitPlan(request.positionId, request.orders, owner);
    }

    /// @notice Cancels an order on a request signed by the position's owner; anyone may submit it.
    /// @param request The EIP-712 `CancelOrderRequest`.
    /// @param signature 65-byte `r || s || v` signature over the request's EIP-712 digest.
    function cancelOrderWithSig(CancelOrderRequest calldata request, bytes calldata signature) external {
        bytes32 structHash = keccak256(
            abi.encode(CANCEL_ORDER_TYPEHASH, request.positionId, request.orderId, request.nonce, request.deadline)
        );
        address owner =
            _usePositionSignature(request.positionId, structHash, request.nonce, request.deadline, signature);
        _cancelOrder(request.positionId, request.orderId, owner);
    }

    /// @notice Sets an operator's rights on a request signed by `request.owner`; anyone may submit it.
    /// @param request The EIP-712 `SetOperatorRequest`.
    /// @param signature 65-byte `r || s || v` signature over the request's EIP-712 digest.
    function setOperatorWithSig(SetOperatorRequest calldata request, bytes calldata signature) external {
        bytes32 structHash = keccak256(
            abi.encode(
                SET_OPERATOR_TYPEHASH,
                request.owner,
                request.operator,
                request.rights,
                request.expiresAt,
                request.nonce,
                request.deadline
            )
        );
        _useSignature(request.owner, structHash, request.nonce, request.deadline, signature);
        _setOperator(request.owner, request.operator, request.rights, request.expiresAt);
    }

    /// @notice Runs an emergency exit signed by `request.owner`; anyone may submit it.
    /// @param request The EIP-712 `EmergencyExitRequest` (`market` 0 = every market).
    /// @param signature 65-byte `r || s || v` signature over the request's EIP-712 digest.
    /// @return closed How many positions were closed.
    function emergencyExitWithSig(EmergencyExitRequest calldata request, bytes calldata signature)
        external
        returns (uint256 closed)
    {
        bytes32 structHash = keccak256(
            abi.encode(EMERGENCY_EXIT_TYPEHASH, request.owner, request.market, request.nonce, request.deadline)
        );
        _useSignature(request.owner, structHash, request.nonce, request.deadline, signature);
        closed = _emergencyExit(request.owner, request.market);
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
            _prices[indexPlusOne - 1] = PriceData(uint128(price), uint64(block.timestamp), _cappedAge(_maxPriceAge));
        } else {
            PriceData storage data = _prices[indexPlusOne - 1];
            data.price = uint128(price);
            data.updatedAt = uint64(block.timestamp);
        }
        emit PriceUpdated(market, price, block.timestamp);
    }

    /// @notice Grants or revokes the price-keeper role; admin only.
    function setPriceKeeper(address keeper, bool approved) external {
        if (msg.sender != _admin) revert NotAuthorized(msg.sender);
        _priceKeepers[keeper] = approved;
        emit PriceKeeperSet(keeper, approved);
    }

    /// @notice Sets how many seconds an oracle price stays usable; admin only.
    /// @dev Copied into every market's price slot (one write per listed market), so trades read one slot.
    function setMaxPriceAge(uint256 maxPriceAge_) external {
        if (msg.sender != _admin) revert NotAuthorized(msg.sender);
        if (maxPriceAge_ == 0) revert InvalidMaxPriceAge(maxPriceAge_);
        _maxPriceAge = maxPriceAge_;
        uint64 capped = _cappedAge(maxPriceAge_);
        uint256 count = _markets.length;
        for (uint256 i = 0; i < count; ++i) {
            _prices[uint32(i)].maxAge = capped;
        }
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
        view_.owner = position.owner;
        view_.market = _markets[position.marketIndex];
        view_.isLong = position.isLong;
        view_.size = position.size;
        view_.entryPrice = position.entryPrice;
        if (view_.size != 0) {
            view_.takeProfit = position.takeProfits[0];
            view_.stopLoss = TriggerOrder(position.stops.price0, position.stops.share0);
        }
    }

    /// @notice The position's pending orders in execution priority (stops first, then take-profits by id),
    ///         each with the size executing it now would close, and the plan's remaining denominator `D`.
    function ordersOf(bytes32 positionId)
        external
        view
        returns (OrderView[] memory orders, uint256 planRemainingBps)
    {
        Position storage position = _positions[positionId];
        uint256 size = position.size;
        planRemainingBps = position.plan & _PLAN_BPS_MASK;
        orders = new OrderView[](ORDER_COUNT);
        uint256 count;
        if (size != 0) {
            for (uint256 k = 0; k < ORDER_COUNT; ++k) {
                uint256 id = (k + FIRST_STOP_ID) % ORDER_COUNT; // 4, 5, 0, 1, 2, 3
                (uint256 price, uint256 share, uint256 trail) = _order(position, id);
                if (price == 0) continue;
                (uint256 sizeDelta,) = tierSize(size, share, planRemainingBps);
                orders[count++] =
                    OrderView(uint8(id), id < FIRST_STOP_ID, price, uint16(share), uint16(trail), sizeDelta);
            }
        }
        assembly ("memory-safe") {
            mstore(orders, count)
        }
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

    /// @notice Whether `operator` holds any unexpired right over `owner`'s positions.
    function isOperator(address owner, address operator) external view returns (bool) {
        OperatorGrant memory grant = _operators[owner][operator];
        return grant.rights != 0 && (grant.expiresAt == 0 || block.timestamp <= grant.expiresAt);
    }

    /// @notice `operator`'s rights over `owner`'s positions (bit flags) and their expiry (0 = never), as granted
    ///         (an expired grant is still returned; `isOperator` says whether it is usable).
    function operatorGrant(address owner, address operator) external view returns (uint8 rights, uint64 expiresAt) {
        OperatorGrant memory grant = _operators[owner][operator];
        return (grant.rights, grant.expiresAt);
    }

    /// @notice Whether `keeper` may set prices.
    function isPriceKeeper(address keeper) external view returns (bool) {
        return _priceKeepers[keeper];
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

    /// @notice The size rule: what executing an order of `shareBps` closes from `size` when the plan's remaining
    ///         denominator is `planBps`, and the denominator after it.
    /// @dev `shareBps >= planBps` closes everything (and leaves nothing of the plan); otherwise
    ///      `floor(size * shareBps / planBps)`, all of it if the rest would fall below `MIN_REMAINING_SIZE`. `size` is below 2^128, so the product cannot overflow.
    function tierSize(uint256 size, uint256 shareBps, uint256 planBps)
        public
        pure
        returns (uint256 sizeDelta, uint256 planBpsAfter)
    {
        if (shareBps >= planBps) return (size, 0);
        sizeDelta = (size * shareBps) / planBps;
        if (size - sizeDelta < MIN_REMAINING_SIZE) sizeDelta = size;
        planBpsAfter = planBps - shareBps;
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

    // ------------------------------------------------------------------------------------------------------
    // Internals: authorization
    // ------------------------------------------------------------------------------------------------------

    /// @dev The owner, or an unexpired operator holding `right`.
    function _authorize(bytes32 positionId, address caller, uint256 right) private view {
        address owner = _positions[positionId].owner;
        if (owner == address(0)) revert PositionNotFound(positionId);
        if (caller != owner) _requireRight(_rightsOf(owner, caller), caller, right);
    }

    /// @dev Every right for the owner; an operator's unexpired rights; reverts for anyone else.
    function _rightsOf(address owner, address caller) private view returns (uint256) {
        if (caller == owner) return ALL_RIGHTS;
        OperatorGrant memory grant = _operators[owner][caller];
        if (grant.rights == 0) revert NotAuthorized(caller);
        if (grant.expiresAt != 0 && block.timestamp > grant.expiresAt) {
            revert OperatorExpired(caller, grant.expiresAt);
        }
        return grant.rights;
    }

    function _requireRight(uint256 rights, address caller, uint256 right) private pure {
        if (rights & right == 0) revert OperatorRightMissing(caller, right);
    }

    function _setOperator(address owner, address operator, uint8 rights, uint64 expiresAt) private {
        if (rights > ALL_RIGHTS) revert OperatorRightsInvalid(rights);
        _operators[owner][operator] = OperatorGrant(rights, expiresAt);
        emit OperatorRightsSet(owner, operator, rights, expiresAt);
    }

    // ------------------------------------------------------------------------------------------------------
    // Internals: closing
    // ------------------------------------------------------------------------------------------------------

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
        uint256 remaining = size - sizeDelta;
        position.size = uint128(remaining);
        _emitDecrease(positionId, position, sizeDelta, remaining, price);
    }

    /// @dev Deletes the order and writes size and plan word (effects), then emits `TriggerExecuted` and
    ///      `PositionDecreased`. There are no external calls.
    function _execute(bytes32 positionId, Position storage position, uint256 orderId, uint256 size, uint256 price)
        private
    {
        uint256 plan = position.plan;
        uint256 next = plan >> _NEXT_TP_SHIFT;
        uint256 trigger;
        uint256 share;
        bool takeProfit = orderId < FIRST_STOP_ID;
        if (takeProfit) {
            TriggerOrder memory order = position.takeProfits[orderId];
            (trigger, share) = (order.price, order.closeBps);
            delete position.takeProfits[orderId];
            next = orderId + 1 < TAKE_PROFIT_COUNT ? orderId + 1 : orderId;
        } else {
            StopPair memory stops = position.stops;
            if (orderId == FIRST_STOP_ID) {
                (trigger, share) = (stops.price0, stops.share0);
                position.stops = StopPair(0, 0, stops.price1, stops.share1);
            } else {
                (trigger, share) = (stops.price1, stops.share1);
                position.stops = StopPair(stops.price0, stops.share0, 0, 0);
            }
        }
        (uint256 sizeDelta, uint256 planBps) = tierSize(size, share, plan & _PLAN_BPS_MASK);
        uint256 remaining = size - sizeDelta;
        position.size = uint128(remaining);
        position.plan = uint16(planBps | (next << _NEXT_TP_SHIFT));
        emit TriggerExecuted(positionId, msg.sender, uint8(orderId), takeProfit, trigger, price, sizeDelta);
        _emitDecrease(positionId, position, sizeDelta, remaining, price);
    }

    /// @dev The first crossed order in execution order, or `_NO_ORDER`. Take-profits are kept in the order a
    ///      price reaches them and every id below the plan word's "next" is empty, so only the first pending
    ///      take-profit can be the first crossed one.
    function _nextCrossed(Position storage position, uint256 price) private view returns (uint256) {
        bool isLong = position.isLong;
        StopPair memory stops = position.stops;
        bool first = stops.price0 != 0 && (isLong ? price <= stops.price0 : price >= stops.price0);
        bool second = stops.price1 != 0 && (isLong ? price <= stops.price1 : price >= stops.price1);
        if (first && second) {
            bool secondFirst = isLong ? stops.price1 > stops.price0 : stops.price1 < stops.price0;
            return secondFirst ? FIRST_STOP_ID + 1 : FIRST_STOP_ID;
        }
        if (first) return FIRST_STOP_ID;
        if (second) return FIRST_STOP_ID + 1;
        for (uint256 id = position.plan >> _NEXT_TP_SHIFT; id < TAKE_PROFIT_COUNT; ++id) {
            uint256 trigger = position.takeProfits[id].price;
            if (trigger != 0) return (isLong ? price >= trigger : price <= trigger) ? id : _NO_ORDER;
        }
        return _NO_ORDER;
    }

    function _emitDecrease(
        bytes32 positionId,
        Position storage position,
        uint256 sizeDelta,
        uint256 remaining,
        uint256 exitPrice
    ) private {
        int256 pnl = realizedPnl(position.isLong, position.entryPrice, exitPrice, sizeDelta);
        emit PositionDecreased(positionId, position.owner, sizeDelta, remaining, exitPrice, pnl);
    }

    function _emergencyExit(address owner, bytes32 market) private returns (uint256 closed) {
        bool everyMarket = market == bytes32(0);
        uint32 marketIndex;
        if (!everyMarket) {
            uint32 indexPlusOne = _marketIndex[market];
            if (indexPlusOne == 0) revert PriceNotSet(market);
            marketIndex = indexPlusOne - 1;
        }
        bytes32[] storage ids = _positionIds[owner];
        uint256 count = ids.length;
        for (uint256 i = 0; i < count; ++i) {
            bytes32 positionId = ids[i];
            Position storage position = _positions[positionId];
            uint256 size = position.size;
            if (size == 0 || (!everyMarket && position.marketIndex != marketIndex)) continue;
            uint256 price = _freshPriceAt(position.marketIndex);
            position.size = 0;
            _emitDecrease(positionId, position, size, 0, price);
            ++closed;
        }
        emit EmergencyExited(owner, market, msg.sender, closed);
    }

    // ------------------------------------------------------------------------------------------------------
    // Internals: orders
    // ------------------------------------------------------------------------------------------------------

    /// @dev An order's trigger price, share and trail (price 0: none).
    function _order(Position storage position, uint256 orderId)
        private
        view
        returns (uint256 price, uint256 share, uint256 trail)
    {
        if (orderId < FIRST_STOP_ID) {
            TriggerOrder memory order = position.takeProfits[orderId];
            return (order.price, order.closeBps, 0);
        }
        StopPair memory stops = position.stops;
        if (orderId == FIRST_STOP_ID) return (stops.price0, stops.share0, position.stopTrail0);
        return (stops.price1, stops.share1, position.stopTrail1);
    }

    function _writeOrder(Position storage position, uint256 orderId, uint256 price, uint256 share, uint256 trail)
        private
    {
        if (orderId < FIRST_STOP_ID) {
            position.takeProfits[orderId] = TriggerOrder(uint112(price), uint16(share));
        } else if (orderId == FIRST_STOP_ID) {
            (position.stops.price0, position.stops.share0) = (uint112(price), uint16(share));
            position.stopTrail0 = uint16(trail);
        } else {
            (position.stops.price1, position.stops.share1) = (uint112(price), uint16(share));
            position.stopTrail1 = uint16(trail);
        }
    }

    /// @dev The legacy setters: price 0 cancels.
    function _setOrCancel(bytes32 positionId, uint256 orderId, uint256 price, uint16 shareBps, address caller)
        private
    {
        if (price == 0) _cancelOrder(positionId, orderId, caller);
        else _setOrder(positionId, orderId, [price, shareBps, 0], caller);
    }

    /// @dev `order` is (price, share, trail).
    function _setOrder(bytes32 positionId, uint256 orderId, uint256[3] memory order, address caller) private {
        Position storage position = _positions[positionId];
        address owner = position.owner;
        if (owner == address(0)) revert PositionNotFound(positionId);
        uint256 rights = _rightsOf(owner, caller);
        if (position.size == 0) revert PositionNotFound(positionId);
        if (orderId >= ORDER_COUNT) revert OrderIdInvalid(orderId);
        _checkOrder(position, orderId, order[0], order[1], order[2]);
        uint256 plan = position.plan;
        uint256 newPlanBps = _planBpsAfterSet(position, orderId, order[1], plan & _PLAN_BPS_MASK);
        bool takeProfit = orderId < FIRST_STOP_ID;
        uint256 right = takeProfit
            ? RIGHT_SET_TAKE_PROFIT
            : _stopSetRight(position, orderId, order, plan & _PLAN_BPS_MASK, newPlanBps);
        if (right != 0) _requireRight(rights, caller, right);

        _writeOrder(position, orderId, order[0], order[1], order[2]);
        uint256 next = plan >> _NEXT_TP_SHIFT;
        if (takeProfit && orderId < next) next = orderId;
        if ((newPlanBps | (next << _NEXT_TP_SHIFT)) != plan) {
            position.plan = uint16(newPlanBps | (next << _NEXT_TP_SHIFT));
        }
        _emitSet(positionId, owner, orderId, order);
    }

    function _emitSet(bytes32 positionId, address owner, uint256 orderId, uint256[3] memory order) private {
        emit TriggerSet(
            positionId, owner, uint8(orderId), orderId < FIRST_STOP_ID, order[0], uint16(order[1]), uint16(order[2])
        );
    }

    /// @dev The plan denominator once order `orderId` gets `share`: a new plan (10_000) when no partial order is
    ///      pending, else unchanged; reverts when the partial shares would exceed it.
    function _planBpsAfterSet(Position storage position, uint256 orderId, uint256 share, uint256 planBps)
        private
        view
        returns (uint256 newPlanBps)
    {
        (uint256 oldPrice, uint256 oldShare,) = _order(position, orderId);
        uint256 others = _partialSharesExcept(position, orderId);
        bool newPlan = others == 0 && (oldPrice == 0 || oldShare >= BPS_DENOMINATOR);
        newPlanBps = newPlan ? BPS_DENOMINATOR : planBps;
        uint256 shares = others + (share < BPS_DENOMINATOR ? share : 0);
        if (shares > newPlanBps) revert PlanSharesExceeded(shares, newPlanBps);
    }

    function _stopSetRight(
        Position storage position,
        uint256 orderId,
        uint256[3] memory now_,
        uint256 planBps,
        uint256 newPlanBps
    ) private view returns (uint256) {
        uint256[3] memory was;
        (was[0], was[1], was[2]) = _order(position, orderId);
        return _stopChangeRight(position.isLong, was, planBps, now_, newPlanBps);
    }

    function _cancelOrder(bytes32 positionId, uint256 orderId, address caller) private {
        Position storage position = _positions[positionId];
        address owner = position.owner;
        if (owner == address(0)) revert PositionNotFound(positionId);
        uint256 rights = _rightsOf(owner, caller);
        if (position.size == 0) revert PositionNotFound(positionId);
        if (orderId >= ORDER_COUNT) revert OrderIdInvalid(orderId);
        bool takeProfit = orderId < FIRST_STOP_ID;
        _requireRight(rights, caller, takeProfit ? RIGHT_SET_TAKE_PROFIT : RIGHT_LOOSEN_OR_CANCEL_STOP);
        _writeOrder(position, orderId, 0, 0, 0);
        emit TriggerSet(positionId, owner, uint8(orderId), takeProfit, 0, 0, 0);
    }

    function _setExitPlan(bytes32 positionId, ExitOrder[] calldata orders, address caller) private {
        Position storage position = _positions[positionId];
        address owner = position.owner;
        if (owner == address(0)) revert PositionNotFound(positionId);
        uint256 rights = _rightsOf(owner, caller);
        if (position.size == 0) revert PositionNotFound(positionId);

        uint256 oldPlanBps = position.plan & _PLAN_BPS_MASK;
        uint256[3][6] memory old;
        bool takeProfits;
        for (uint256 id = 0; id < ORDER_COUNT; ++id) {
            (old[id][0], old[id][1], old[id][2]) = _order(position, id);
            if (old[id][0] != 0) {
                if (id < FIRST_STOP_ID) takeProfits = true;
                _writeOrder(position, id, 0, 0, 0);
            }
        }
        (uint256 next, bool newTakeProfits) = _writePlan(position, orders);
        if (takeProfits || newTakeProfits) _requireRight(rights, caller, RIGHT_SET_TAKE_PROFIT);
        for (uint256 id = FIRST_STOP_ID; id < ORDER_COUNT; ++id) {
            uint256[3] memory now_;
            (now_[0], now_[1], now_[2]) = _order(position, id);
            uint256 right = _stopChangeRight(position.isLong, old[id], oldPlanBps, now_, BPS_DENOMINATOR);
            if (right != 0) _requireRight(rights, caller, right);
        }

        position.plan = uint16(BPS_DENOMINATOR | (next << _NEXT_TP_SHIFT));
        _emitPlan(positionId, position, owner, old);
        emit ExitPlanSet(positionId, owner, orders.length);
    }

    /// @dev One `TriggerSet` per order the plan set, and one (price 0) per order it removed.
    function _emitPlan(bytes32 positionId, Position storage position, address owner, uint256[3][6] memory old)
        private
    {
        for (uint256 id = 0; id < ORDER_COUNT; ++id) {
            (uint256 price, uint256 share, uint256 trail) = _order(position, id);
            if (price != 0 || old[id][0] != 0) {
                emit TriggerSet(
                    positionId, owner, uint8(id), id < FIRST_STOP_ID, price, uint16(share), uint16(trail)
                );
            }
        }
    }

    /// @dev Validates and writes a plan's orders into a position whose orders were just cleared. Returns the
    ///      lowest take-profit id written (3 when none) and whether there is one.
    function _writePlan(Position storage position, ExitOrder[] calldata orders)
        private
        returns (uint256 next, bool takeProfits)
    {
        uint256 seen;
        uint256 shares;
        next = TAKE_PROFIT_COUNT - 1;
        for (uint256 i = 0; i < orders.length; ++i) {
            ExitOrder calldata order = orders[i];
            uint256 id = order.orderId;
            if (id >= ORDER_COUNT) revert OrderIdInvalid(id);
            if (seen & (1 << id) != 0) revert PlanOrderDuplicated(id);
            seen |= 1 << id;
            _checkOrder(position, id, order.price, order.shareBps, order.trailBps);
            if (order.shareBps < BPS_DENOMINATOR) shares += order.shareBps;
            if (id < FIRST_STOP_ID) {
                takeProfits = true;
                if (id < next) next = id;
            }
            _writeOrder(position, id, order.price, order.shareBps, order.trailBps);
        }
        if (shares > BPS_DENOMINATOR) revert PlanSharesExceeded(shares, BPS_DENOMINATOR);
    }

    /// @dev The right a stop change `was` (price, share, trail under `wasPlanBps`) -> `now_` needs from an
    ///      operator: none when nothing changes, `RIGHT_TIGHTEN_STOP` for a new or tighter stop, else
    ///      `RIGHT_LOOSEN_OR_CANCEL_STOP` (a cancellation included).
    function _stopChangeRight(
        bool isLong,
        uint256[3] memory was,
        uint256 wasPlanBps,
        uint256[3] memory now_,
        uint256 nowPlanBps
    ) private pure returns (uint256) {
        if (now_[0] == 0) return was[0] == 0 ? 0 : RIGHT_LOOSEN_OR_CANCEL_STOP;
        if (was[0] == 0) return RIGHT_TIGHTEN_STOP;
        bool sameFraction = was[1] >= BPS_DENOMINATOR || wasPlanBps == nowPlanBps;
        if (now_[0] == was[0] && now_[1] == was[1] && now_[2] == was[2] && sameFraction) return 0;
        return _stopIsTighter(isLong, was, wasPlanBps, now_, nowPlanBps)
            ? RIGHT_TIGHTEN_STOP
            : RIGHT_LOOSEN_OR_CANCEL_STOP;
    }

    /// @dev Price range and side, share range, trail rules, take-profit sequence (against the pending ones).
    function _checkOrder(Position storage position, uint256 orderId, uint256 price, uint256 share, uint256 trail)
        private
        view
    {
        if (price == 0 || price > type(uint112).max) revert InvalidPrice(price);
        if (share == 0 || share > BPS_DENOMINATOR) revert InvalidCloseBps(share);
        bool takeProfit = orderId < FIRST_STOP_ID;
        if (takeProfit ? trail != 0 : trail >= BPS_DENOMINATOR) revert OrderTrailInvalid(orderId, trail);
        bool isLong = position.isLong;
        uint256 current = _freshPriceAt(position.marketIndex);
        bool valid = isLong == takeProfit ? price > current : price < current;
        if (!valid) revert InvalidTriggerPrice(takeProfit, price, current);
        if (!takeProfit) return;
        for (uint256 other = 0; other < TAKE_PROFIT_COUNT; ++other) {
            if (other == orderId) continue;
            uint256 otherPrice = position.takeProfits[other].price;
            if (otherPrice == 0) continue;
            // Lower ids are reached first: below `price` for a long, above it for a short.
            bool reachedFirst = isLong ? otherPrice < price : otherPrice > price;
            if (reachedFirst != (other < orderId) || otherPrice == price) {
                revert OrderOutOfSequence(orderId, price, other, otherPrice);
            }
        }
    }

    /// @dev Sum of the shares of the pending partial orders (share below 10_000) other than `orderId`.
    function _partialSharesExcept(Position storage position, uint256 orderId) private view returns (uint256 sum) {
        for (uint256 id = 0; id < ORDER_COUNT; ++id) {
            if (id == orderId) continue;
            (uint256 price, uint256 share,) = _order(position, id);
            if (price != 0 && share < BPS_DENOMINATOR) sum += share;
        }
    }

    /// @dev Whether a stop change is a tightening: the trigger does not move away from the price (a long's stop
    ///      not down, a short's not up), the effective fraction `min(1, share / planBps)` does not shrink, and
    ///      the stop neither stops trailing nor trails wider. Orders are (price, share, trail).
    function _stopIsTighter(
        bool isLong,
        uint256[3] memory was,
        uint256 wasPlanBps,
        uint256[3] memory now_,
        uint256 nowPlanBps
    ) private pure returns (bool) {
        if (isLong ? now_[0] < was[0] : now_[0] > was[0]) return false;
        (uint256 wasNum, uint256 wasDen) = was[1] >= wasPlanBps ? (1, 1) : (was[1], wasPlanBps);
        (uint256 nowNum, uint256 nowDen) = now_[1] >= nowPlanBps ? (1, 1) : (now_[1], nowPlanBps);
        if (nowNum * wasDen < wasNum * nowDen) return false;
        if (was[2] != 0 && (now_[2] == 0 || now_[2] > was[2])) return false;
        return true;
    }

    // ------------------------------------------------------------------------------------------------------
    // Internals: signatures and prices
    // ------------------------------------------------------------------------------------------------------

    /// @dev A signed request about a position: its owner must have signed it. Returns the owner.
    function _usePositionSignature(
        bytes32 positionId,
        bytes32 structHash,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) private returns (address owner) {
        owner = _positions[positionId].owner;
        if (owner == address(0)) revert PositionNotFound(positionId);
        _useSignature(owner, structHash, nonce, deadline, signature);
    }

    /// @dev Checks deadline, nonce and signature, then consumes the nonce before the action runs, so a request
    ///      can execute at most once (replay-proof even if the action itself were to re-enter).
    function _useSignature(address owner, bytes32 structHash, uint256 nonce, uint256 deadline, bytes calldata signature)
        private
    {
        if (block.timestamp > deadline) revert ExpiredRequest(deadline, block.timestamp);
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
    ///      subtraction cannot underflow. The age limit is the market slot's copy (capped at 2^64-1, which no
    ///      age reaches); the error reports the uncapped setting.
    function _freshPriceAt(uint32 marketIndex) private view returns (uint256) {
        PriceData memory data = _prices[marketIndex];
        if (block.timestamp - data.updatedAt > data.maxAge) {
            revert StalePrice(_markets[marketIndex], data.updatedAt, _maxPriceAge);
        }
        return data.price;
    }

    function _cappedAge(uint256 age) private pure returns (uint64) {
        return age > type(uint64).max ? type(uint64).max : uint64(age);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
    }
}

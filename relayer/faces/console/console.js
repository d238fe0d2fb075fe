// The operator console: asks for an admin API key, renders GET /api/console, and stays live by following
// GET /api/stream (Server-Sent Events). EventSource cannot send an Authorization header, so the stream is read
// with fetch() and a ReadableStream and parsed here; it resumes with Last-Event-ID after a drop. While the
// stream is not open the page polls the snapshot instead. Data is only ever written with textContent.
"use strict";

(() => {
  const KEY_SLOT = "vault-relayer.console.key"; // sessionStorage: this tab only, never the URL
  const POLL_MS = 3000; // snapshot refresh while the stream is not live
  const LIVE_REFRESH_MS = 15000; // balances and leases change without notices
  const REFRESH_DEBOUNCE_MS = 150; // a burst of notices makes one snapshot read
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 15000;
  const STREAM_MISSING_RETRY_MS = 30000; // a server without /api/stream: look again now and then
  const MAX_SSE_BUFFER = 1 << 20; // one event is a few hundred bytes; a runaway line is dropped

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  let key = sessionStorage.getItem(KEY_SLOT);
  let generation = 0; // bumped whenever the key changes: older loops see it and stop
  let lastEventId = null; // the last notice's cursor (or the snapshot's), for Last-Event-ID
  let streamLive = false;
  let snapshotOk = false;
  let streamAbort = null;
  let pollTimer = null;
  let refreshTimer = null;
  let previousStatus = new Map(); // transaction id -> status at the last render (highlights changes)

  // --- connection state ------------------------------------------------------------------------------------

  function showMode() {
    const mode = streamLive ? "live" : snapshotOk ? "polling" : "disconnected";
    const badge = $("connection");
    badge.textContent = mode;
    badge.className = "connection " + mode;
    badge.dataset.mode = mode;
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function refusal(status, error) {
    if (status === 403) {
      return "This key may not open the console: it needs the admin scope (" + error.code + ": " +
        error.message + ").";
    }
    return "The key was refused (" + error.code + "): " + error.message;
  }

  // --- the snapshot ------------------------------------------------------------------------------------------

  async function loadSnapshot(gen) {
    if (!key || gen !== generation) return false;
    let response;
    let body = null;
    try {
      response = await fetch("/api/console", {
        headers: { Authorization: "Bearer " + key, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
      body = await response.json().catch(() => null);
    } catch (err) {
      if (gen !== generation) return false;
      snapshotOk = false;
      showMode();
      showError("The relayer does not answer: " + err.message);
      return false;
    }
    if (gen !== generation) return false;
    if (!response.ok) {
      const error = body && body.error ? body.error : { code: "http_" + response.status, message: "" };
      snapshotOk = false;
      if (response.status === 401 || response.status === 403) {
        forget();
        showError(refusal(response.status, error));
        return false;
      }
      showMode();
      showError("The console could not load (" + error.code + "): " + error.message);
      return false;
    }
    snapshotOk = true;
    clearError();
    if (lastEventId === null && body.cursor) lastEventId = body.cursor;
    render(body);
    showMode();
    return true;
  }

  function refreshSoon() {
    clearTimeout(refreshTimer);
    const gen = generation;
    refreshTimer = setTimeout(() => loadSnapshot(gen), REFRESH_DEBOUNCE_MS);
  }

  function schedulePoll(gen) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(async () => {
      if (gen !== generation) return;
      await loadSnapshot(gen);
      schedulePoll(gen);
    }, streamLive ? LIVE_REFRESH_MS : POLL_MS);
  }

  // --- the stream --------------------------------------------------------------------------------------------

  // A Server-Sent Events parser (the WHATWG rules that matter here): lines end in CRLF, LF or CR; a blank line
  // dispatches; "data" lines join with "\n"; "event" names the type; "id" sets the last event id; ":" starts a
  // comment (the server's heartbeat).
  function sseParser(dispatch) {
    let buffer = "";
    let data = [];
    let type = "";
    let id = null;
    const line = (text) => {
      if (text === "") {
        if (id !== null) lastEventId = id;
        if (data.length) dispatch({ id, type: type || "message", data: data.join("\n") });
        data = [];
        type = "";
        return;
      }
      if (text.startsWith(":")) return;
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) id = value;
    };
    // feed(text) for each chunk; feed(null) at the end of the stream (a last lone CR ends its line).
    return (chunk) => {
      const last = chunk === null;
      buffer += last ? "" : chunk;
      for (;;) {
        const end = buffer.search(/\r\n|\n|\r/);
        if (end < 0) break;
        if (!last && buffer[end] === "\r" && end === buffer.length - 1) break; // maybe half a CRLF: wait
        const width = buffer.startsWith("\r\n", end) ? 2 : 1;
        line(buffer.slice(0, end));
        buffer = buffer.slice(end + width);
      }
      if (buffer.length > MAX_SSE_BUFFER) buffer = "";
    };
  }

  function onNotice(event) {
    let notice;
    try {
      notice = JSON.parse(event.data);
    } catch {
      return;
    }
    const data = (notice && notice.data) || {};
    const row = data.transactionId ? findRow(data.transactionId) : null;
    if (row && notice.type === "transaction.status" && data.status) {
      setStatusCell(row.querySelector('[data-col="status"]'), data.status);
      row.classList.add("changed");
    }
    if (row && notice.type === "position.decreased") {
      row.querySelector('[data-col="closed"]').textContent = data.closed_qty || "";
      row.querySelector('[data-col="remaining"]').textContent = data.remaining_qty || "";
      row.querySelector('[data-col="exit"]').textContent = data.exit_price || "";
      row.querySelector('[data-col="pnl"]').textContent = data.realized_pnl_usd || "";
    }
    refreshSoon(); // new rows, the queue, balances and spend come with the snapshot
  }

  async function followStream(gen) {
    let retryMs = RETRY_MIN_MS;
    while (gen === generation && key) {
      const abort = new AbortController();
      streamAbort = abort;
      const headers = { Authorization: "Bearer " + key, Accept: "text/event-stream" };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      let wait = retryMs;
      try {
        const response = await fetch("/api/stream", {
          headers,
          cache: "no-store",
          credentials: "omit",
          signal: abort.signal,
        });
        const type = response.headers.get("content-type") || "";
        if (response.ok && type.startsWith("text/event-stream") && response.body) {
          streamLive = true;
          retryMs = RETRY_MIN_MS;
          showMode();
          schedulePoll(gen);
          refreshSoon(); // whatever changed between the snapshot and the stream's start
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          const feed = sseParser(onNotice);
          for (;;) {
            const { value, done } = await reader.read();
            if (done || gen !== generation) break;
            feed(value);
          }
          if (gen === generation) feed(null);
        } else {
          if (response.body) await response.body.cancel().catch(() => {});
          const after = Number(response.headers.get("retry-after"));
          if (response.status === 404 || response.status === 405) wait = STREAM_MISSING_RETRY_MS;
          else if (after > 0) wait = after * 1000;
        }
      } catch (err) {
        if (abort.signal.aborted) return;
      }
      if (gen !== generation) return;
      if (streamLive) {
        streamLive = false;
        showMode();
        schedulePoll(gen);
      }
      await sleep(wait);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  }

  // --- rendering (textContent only) --------------------------------------------------------------------------

  function cell(text, col, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (col) td.dataset.col = col;
    if (className) td.className = className;
    return td;
  }

  function rowOf(cells, id) {
    const tr = document.createElement("tr");
    if (id) tr.dataset.id = id;
    for (const td of cells) tr.appendChild(td);
    return tr;
  }

  function fill(tableId, rows, emptyText, columns) {
    const body = $(tableId).querySelector("tbody");
    const next = rows.length ? rows : [rowOf([cell(emptyText, "empty", "muted")])];
    if (!rows.length) next[0].firstChild.colSpan = columns;
    body.replaceChildren(...next);
  }

  function setStatusCell(td, status) {
    td.textContent = status;
    td.className = "status-" + status;
    td.dataset.status = status;
  }

  function findRow(id) {
    for (const tr of $("transactions").querySelectorAll("tbody tr")) {
      if (tr.dataset.id === id) return tr;
    }
    return null;
  }

  const time = (unixS) => (unixS ? new Date(unixS * 1000).toISOString().replace("T", " ").slice(0, 19) : "");
  const short = (hex) => (hex && hex.length > 14 ? hex.slice(0, 8) + "…" + hex.slice(-6) : hex || "");

  function render(snapshot) {
    $("views").hidden = false;
    $("login").hidden = true;
    $("forget").hidden = false;
    $("about").textContent = snapshot.instance + " · chain " + snapshot.chainId + " · vault " + snapshot.vault +
      " · updated " + time(snapshot.generatedAt) + " UTC";
    $("low-balance").hidden = !snapshot.lowBalance;

    fill("signers", snapshot.signers.map((s) => {
      const lease = s.lease || {};
      return rowOf([
        cell(s.address, "address", "mono"),
        cell(s.balanceEther, "balance-ether", "num"),
        cell(s.balanceWei, "balance-wei", "num mono"),
        cell(s.lowBalance ? "yes" : "no", "low", s.lowBalance ? "yes" : ""),
        cell(s.journalNextNonce, "journal-nonce", "num"),
        cell(s.chainLatestNonce + " / " + s.chainPendingNonce, "chain-nonce", "num"),
        cell(s.inFlight, "in-flight", "num"),
        cell(lease.holder, "lease-holder"),
        cell(lease.epoch, "lease-epoch", "num"),
        cell(lease.expiresInS, "lease-expires", "num"),
        cell(s.stopped || "", "stopped"),
      ], s.address);
    }), "No signers", 11);

    fill("queue", Object.entries(snapshot.queue).map(([status, count]) =>
      rowOf([cell(status, "status", "status-" + status), cell(count, "count", "num")], status),
    ), "", 2);

    fill("leases", snapshot.leases.map((l) =>
      rowOf([cell(l.name, "name", "mono"), cell(l.holder, "holder"), cell(l.epoch, "epoch", "num"),
        cell(l.expiresInS, "expires", "num")], l.name),
    ), "No leases", 4);

    const today = snapshot.spend.today;
    const policy = snapshot.spend.policy;
    const spend = $("spend");
    const entries = [
      ["Spent (ETH)", today.spentEther, "spent"],
      ["Daily cap (ETH)", today.dailyCapEther, "cap"],
      ["Spent (wei)", today.spentWei, "spent-wei"],
      ["Requests", today.requests, "requests"],
      ["Cap reached", today.capReached ? "yes" : "no", "cap-reached"],
      ["Resets at", time(today.resetsAt) + " UTC", "resets"],
      ["Sponsors", policy.who, "who"],
      ["Signed requests' daily cap (wei)", policy.signedDailyCapWei, "signed-cap"],
      ["Per key gas / day (wei)", policy.keyGasWeiPerDay, "key-gas"],
      ["Per owner gas / day (wei)", policy.ownerGasWeiPerDay, "owner-gas"],
    ];
    spend.replaceChildren(...entries.flatMap(([label, value, name]) => {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value === null || value === undefined ? "" : String(value);
      dd.dataset.col = name;
      return [dt, dd];
    }));

    const seen = new Map();
    fill("transactions", snapshot.transactions.map((t) => {
      const f = t.fills[0] || t.executions[0] || {};
      const error = t.error ? t.error.code + ": " + t.error.message : "";
      const status = cell("", "status");
      setStatusCell(status, t.status);
      const tr = rowOf([
        cell(time(t.updatedAt), "updated"),
        cell(t.id, "id", "mono"),
        cell(t.kind, "kind"),
        status,
        cell(t.account, "account", "mono"),
        cell(short(t.signer), "signer", "mono"),
        cell(t.nonce, "nonce", "num"),
        cell(short(t.transactionHash), "hash", "mono"),
        cell(f.closed_qty, "closed", "num"),
        cell(f.remaining_qty, "remaining", "num"),
        cell(f.exit_price || f.execution_price, "exit", "num"),
        cell(f.realized_pnl_usd, "pnl", "num"),
        cell(error, "error", "error-cell"),
      ], t.id);
      if (t.transactionHash) tr.children[7].title = t.transactionHash;
      if (t.signer) tr.children[5].title = t.signer;
      const before = previousStatus.get(t.id);
      if (previousStatus.size && before !== t.status) tr.classList.add("changed");
      seen.set(t.id, t.status);
      return tr;
    }), "No relayed transactions yet", 13);
    previousStatus = seen;

    const keeper = snapshot.keeper;
    const lease = keeper.lease;
    $("keeper-state").textContent = !keeper.configured ? "(no keeper: no signers)"
      : lease ? "(" + keeper.ordersTotal + " tracked; lease held by " + lease.holder + ")"
        : "(" + keeper.ordersTotal + " tracked)";
    fill("orders", keeper.orders.map((o) =>
      rowOf([cell(o.positionId, "position", "mono"), cell(o.order, "order"), cell(o.triggerPrice, "price", "num"),
        cell(o.setAtBlock, "block", "num"), cell(o.logIndex, "log", "num")], o.positionId + ":" + o.order),
    ), "No orders tracked", 5);
  }

  // --- the key -----------------------------------------------------------------------------------------------

  function forget() {
    generation += 1;
    key = null;
    sessionStorage.removeItem(KEY_SLOT);
    if (streamAbort) streamAbort.abort();
    clearTimeout(pollTimer);
    clearTimeout(refreshTimer);
    streamLive = false;
    snapshotOk = false;
    lastEventId = null;
    previousStatus = new Map();
    $("views").hidden = true;
    $("login").hidden = false;
    $("forget").hidden = true;
    $("about").textContent = "";
    showMode();
  }

  async function start() {
    generation += 1;
    const gen = generation;
    if (!(await loadSnapshot(gen))) {
      if (key && gen === generation) schedulePoll(gen); // the server answered badly or not at all: try again
      return;
    }
    schedulePoll(gen);
    followStream(gen);
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key").value.trim();
    $("key").value = "";
    if (!value) return;
    forget();
    clearError();
    key = value;
    sessionStorage.setItem(KEY_SLOT, key);
    start();
  });

  $("forget").addEventListener("click", () => {
    forget();
    clearError();
  });

  showMode();
  if (key) start();
})();

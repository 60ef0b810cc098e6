"use strict";
// The review page: the least certain waiting item, answered with one click or one key (P product,
// S service, N skip); the rest of the queue below it. Answers go to POST /review/answer, which publishes
// them as corrections. Skipped items are remembered in this tab (sessionStorage) and shown after the others.
(function () {
  const config = JSON.parse(document.body.dataset.config);
  const signedIn = document.body.dataset.user || "";
  const $ = (id) => document.getElementById(id);
  // from the origin: a page opened as http://user:password@host/review would make a relative URL carry the
  // credentials, which fetch refuses (the browser sends the signed-in Basic credentials by itself)
  const url = (path) => new URL(path, location.origin).href;
  const state = { items: [], current: null, sending: false, answered: 0, lastError: "" };
  const skipped = new Set(JSON.parse(sessionStorage.getItem("review-skipped") || "[]"));

  function reviewer() {
    return signedIn || $("reviewer").value.trim();
  }

  if (signedIn) {
    $("who").textContent = "signed in as " + signedIn;
  } else {
    $("reviewer-box").style.display = "inline";
    $("reviewer").value = localStorage.getItem("review-reviewer") || "";
    $("reviewer").addEventListener("change", () => {
      localStorage.setItem("review-reviewer", $("reviewer").value.trim());
      refresh();
    });
  }

  function say(text, kind) {
    const message = $("message");
    message.textContent = text;
    message.className = kind || "";
  }

  function text(value) {
    return value === null || value === undefined ? "" : String(value);
  }

  function showItem(item) {
    state.current = item;
    $("empty").style.display = item ? "none" : "block";
    $("item").style.display = item ? "block" : "none";
    if (!item) return;
    const fields = item.item;
    $("item-name").textContent = fields.name || "(no name)";
    $("item-full-name").textContent = fields.full_name && fields.full_name !== fields.name ? fields.full_name : "";
    const rows = [
      ["model says", `<span class="label-${item.label}">${item.label}</span> · confidence ${item.confidence.toFixed(3)}`],
    ];
    if (item.challenger) {
      const c = item.challenger;
      rows.push(["challenger says", `<span class="label-${c.label}">${c.label}</span> · ${c.confidence.toFixed(3)} (${c.model_version})`]);
    }
    rows.push(["why here", item.reasons.join(", ").replaceAll("_", " ")]);
    for (const name of ["kind", "unit", "type_hint", "okved_code", "hs_code", "country", "region", "source"]) {
      if (fields[name]) rows.push([name.replace("_", " "), null, fields[name]]);
    }
    rows.push(["id · model", null, `${item.id} · ${item.model_version}`]);
    const list = $("item-fields");
    list.replaceChildren();
    for (const [term, markup, plain] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      if (markup !== null) dd.innerHTML = markup; else dd.textContent = text(plain);
      list.append(dt, dd);
    }
    const tokens = $("item-explanation");
    tokens.replaceChildren();
    for (const { token, weight } of item.explanation) {
      const span = document.createElement("span");
      span.className = weight >= 0 ? "for" : "against";
      span.textContent = `${token} ${weight >= 0 ? "+" : ""}${weight.toFixed(2)}`;
      span.title = weight >= 0 ? `pushes towards ${item.label}` : `pushes against ${item.label}`;
      tokens.append(span);
    }
  }

  function showQueue(items) {
    const body = $("queue");
    body.replaceChildren();
    for (const item of items.slice(1, 26)) {
      const row = document.createElement("tr");
      for (const value of [item.item.name, item.label, item.confidence.toFixed(3), item.reasons.join(", ")]) {
        const cell = document.createElement("td");
        cell.textContent = text(value);
        row.append(cell);
      }
      body.append(row);
    }
  }

  function showAgreement(agreement, counts) {
    $("pending").textContent = counts.pending;
    $("reviewed").textContent = counts.reviewed;
    $("kappa").textContent = agreement.kappa === null ? "n/a" : agreement.kappa.toFixed(2);
    $("kappa-items").textContent = agreement.items ? `(${agreement.items} items, ${(100 * agreement.observed).toFixed(0)}% agreed)` : "(no item answered twice yet)";
    const body = $("pairs");
    body.replaceChildren();
    for (const pair of agreement.pairs) {
      const row = document.createElement("tr");
      const kappa = pair.kappa === null ? "n/a" : pair.kappa.toFixed(2);
      for (const value of [pair.reviewers.join(" · "), pair.items, `${(100 * pair.observed).toFixed(0)}%`, kappa]) {
        const cell = document.createElement("td");
        cell.textContent = text(value);
        row.append(cell);
      }
      body.append(row);
    }
    $("pairs-card").style.display = agreement.pairs.length ? "block" : "none";
  }

  async function refresh() {
    const who = reviewer();
    const query = `?limit=200${who && !signedIn ? "&reviewer=" + encodeURIComponent(who) : ""}`;
    let body;
    try {
      const response = await fetch(url(config.paths.items + query), { credentials: "same-origin", cache: "no-store" });
      body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
    } catch (error) {
      say(`could not load the queue: ${error.message}`, "error");
      return;
    }
    // skipped ones last; the one on screen stays while it still waits (a refresh must not swap it away)
    const items = body.items.filter((i) => !skipped.has(i.id)).concat(body.items.filter((i) => skipped.has(i.id)));
    const keep = state.current && items.find((i) => i.id === state.current.id);
    state.items = keep ? [keep, ...items.filter((i) => i !== keep)] : items;
    if (!keep) showItem(state.items[0] || null);
    showQueue(state.items);
    showAgreement(body.agreement, body.counts);
  }

  function next() {
    state.items = state.items.filter((i) => i !== state.current);
    $("comment").value = "";
    showItem(state.items[0] || null);
    showQueue(state.items);
  }

  async function answer(label) {
    const item = state.current;
    if (!item || state.sending) return;
    if (label === null) {
      skipped.add(item.id);
      sessionStorage.setItem("review-skipped", JSON.stringify([...skipped]));
      say(`skipped ${item.item.name}`, "");
      next();
      return;
    }
    const who = reviewer();
    if (!who) {
      say("give your name in the header first: an answer says who gave it", "error");
      $("reviewer").focus();
      return;
    }
    state.sending = true;
    try {
      const payload = { id: item.id, label, model_version: item.model_version, comment: $("comment").value };
      if (!signedIn) payload.reviewer = who;
      const response = await fetch(url(config.paths.answer), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      });
      const body = await response.json();
      if (!response.ok) {
        state.lastError = body.error || (body.errors || []).map((e) => e.message).join("; ");
        say(`not sent: ${state.lastError}`, "error");
        if (response.status === 409 || response.status === 404) await refresh();
        return;
      }
      state.answered += 1;
      say(`${item.item.name}: ${label} — sent as a correction`, "ok");
      next();
      $("pending").textContent = body.counts.pending;
      $("reviewed").textContent = body.counts.reviewed;
    } catch (error) {
      say(`not sent: ${error.message}`, "error");
    } finally {
      state.sending = false;
    }
  }

  $("answer-product").addEventListener("click", () => answer("product"));
  $("answer-service").addEventListener("click", () => answer("service"));
  $("answer-skip").addEventListener("click", () => answer(null));
  document.addEventListener("keydown", (event) => {
    const target = event.target.tagName;
    if (target === "TEXTAREA" || target === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
    // by physical key, so that P, S and N work on a Russian layout too (where they type з, ы, т)
    const label = { KeyP: "product", KeyS: "service", KeyN: null }[event.code];
    if (label === undefined) return;
    event.preventDefault();
    answer(label);
  });

  window.review = { state, refresh };
  refresh();
  setInterval(refresh, 5000);
})();

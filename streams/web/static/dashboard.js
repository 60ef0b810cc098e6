// The operator's dashboard: fetches the worker's JSON every refresh_seconds and redraws with Plotly.react.
// Every plot div carries data-points (points drawn, 0 = the "no data yet" note is shown instead).
"use strict";

(() => {
  const config = JSON.parse(document.body.dataset.config);
  const REFRESH_MS = Math.max(0.5, Number(config.refresh_seconds) || 5) * 1000;
  const PLOT_CONFIG = { displaylogo: false, displayModeBar: false, responsive: true };
  const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#1b7c83", "#953800",
                  "#57606a", "#4d2d00", "#0550ae", "#6639ba"];
  const state = { refreshes: 0, lastRefresh: null, errors: {} };
  window.dashboard = state;  // read by tests/test_dashboard_browser.py (which also calls state.draw)

  const pad = (n, w = 2) => String(n).padStart(w, "0");
  // Plotly reads date strings as wall-clock time: give it the browser's local time, not UTC
  function localTime(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const scaled = (values, k) => (values || []).map((v) => (isNum(v) ? v * k : null));
  const fmt = (v, digits = 3) => (isNum(v) ? Number(v.toPrecision(digits)).toString() : "–");

  function duration(seconds) {
    if (!isNum(seconds)) return "–";
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? `${h} h ${pad(m)} min` : m ? `${m} min ${pad(s % 60)} s` : `${s} s`;
  }

  async function fetchJson(path) {
    try {
      const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
      const body = await response.json().catch(() => null);
      return { ok: response.ok, status: response.status, body };
    } catch (error) {
      return { ok: false, status: 0, body: null, error: String(error) };
    }
  }

  function why(result, name) {
    if (result.ok) return "";
    const detail = result.body && (result.body.detail || result.body.error);
    return `${name}: ${result.status ? `HTTP ${result.status}` : result.error}${detail ? ` (${detail})` : ""}`;
  }

  function countPoints(traces) {
    let n = 0;
    for (const trace of traces) {
      const values = trace.orientation === "h" ? trace.x : trace.y;  // a horizontal bar's values are its x
      for (const v of values || []) if (isNum(v)) n += 1;
    }
    return n;
  }

  const GRID = "#eaeef2";
  // A layout: small margins, the legend under the plot, a time axis; `xaxis`/`yaxis` entries are merged in
  function baseLayout({ xaxis, yaxis, ...extra } = {}) {
    return {
      margin: { l: 50, r: 14, t: 6, b: 26 },
      font: { size: 11, family: "system-ui, sans-serif" },
      paper_bgcolor: "#fff", plot_bgcolor: "#fff",
      showlegend: true,
      legend: { orientation: "h", x: 0, y: -0.14, yanchor: "top", font: { size: 10 }, tracegroupgap: 2 },
      xaxis: { type: "date", tickformat: "%H:%M:%S", hoverformat: "%H:%M:%S", gridcolor: GRID,
               automargin: true, ...xaxis },
      yaxis: { gridcolor: GRID, rangemode: "tozero", automargin: true, ...yaxis },
      ...extra,
    };
  }

  // Draw `traces` in the div `id`, or show its note (`empty`, default "no data yet") when they hold no point.
  function render(id, traces, layout, empty) {
    const div = document.getElementById(id);
    const note = div.nextElementSibling;
    const points = countPoints(traces);
    div.dataset.points = String(points);
    if (points === 0) {
      if (!div.classList.contains("empty")) Plotly.purge(div);
      div.classList.add("empty");
      note.textContent = empty || "no data yet";
      return;
    }
    div.classList.remove("empty");
    Plotly.react(div, traces, { uirevision: id, ...layout }, PLOT_CONFIG);
  }

  // Markers as well as lines: a sample between two empty ones (no batch then) is a point, not a segment
  function line(name, x, y, color, extra = {}) {
    return { type: "scatter", mode: "lines+markers", name, x, y, connectgaps: false,
             marker: { size: 3, color }, ...extra, line: { color, width: 1.6, ...extra.line } };
  }

  // ---- this worker's history (/dashboard/data)
  function drawHistory(data, reason) {
    const empty = reason ? `no data yet: ${reason}` : undefined;
    const h = (data && data.history) || {};
    const x = (h.t || []).map((t) => localTime(t * 1000));
    const rejected = Object.entries(h.rejected_per_second || {}).sort(([a], [b]) => a.localeCompare(b));
    render("plot-throughput", [
      line("classified", x, h.classified_per_second || [], COLORS[2], { line: { width: 2 } }),
      // rejections on an axis of their own (right): a tenth of the traffic would lie flat on the left one
      ...rejected.map(([code, ys], i) => line(code, x, ys, COLORS[[1, 3, 4, 5, 6, 7, 8, 9][i % 8]], {
        meta: "rejected", yaxis: "y2", line: { dash: "dot" },
        hovertemplate: "rejected %{fullData.name}: %{y}/s<extra></extra>",
      })),
    ], baseLayout({
      margin: { l: 50, r: 50, t: 6, b: 26 },
      yaxis: { title: { text: "classified/s" } },
      yaxis2: { title: { text: "rejected/s (dotted)" }, overlaying: "y", side: "right", rangemode: "tozero",
                showgrid: false },
    }), empty);

    const lag = Object.entries(h.lag || {}).sort(([a], [b]) => {
      const [ta, pa] = a.split(/:(?=\d+$)/), [tb, pb] = b.split(/:(?=\d+$)/);
      return ta.localeCompare(tb) || Number(pa) - Number(pb);
    });
    render("plot-lag", lag.map(([tp, ys], i) =>
      line(tp.replace(/^nomenclature\./, ""), x, ys, COLORS[i % COLORS.length], { meta: tp })),
    baseLayout({ yaxis: { title: { text: "records" } } }), empty);

    render("plot-latency", [
      line("p50", x, scaled(h.latency_p50_seconds, 1000), COLORS[0]),
      line("p99", x, scaled(h.latency_p99_seconds, 1000), COLORS[1]),
    ], baseLayout({ yaxis: { title: { text: "ms" } } }), empty);

    render("plot-batches", [
      line("mean batch size (items)", x, h.batch_size_mean || [], COLORS[0]),
      line("mean scoring time (ms)", x, scaled(h.scoring_seconds_mean, 1000), COLORS[3], { yaxis: "y2" }),
    ], baseLayout({
      margin: { l: 50, r: 50, t: 6, b: 26 },
      yaxis: { title: { text: "items" } },
      yaxis2: { title: { text: "ms" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false },
    }), empty);

    const statuses = Object.entries(h.predict_per_second || {}).sort(([a], [b]) => a.localeCompare(b));
    render("plot-predict", statuses.map(([status, ys], i) =>
      line(status, x, ys, status === "200" ? COLORS[2] : status === "429" ? COLORS[1] : COLORS[(i + 3) % 10],
           { meta: status })),
    baseLayout({ yaxis: { title: { text: "answers/s" }, rangemode: "tozero" } }), empty);

    const confidence = (data && data.confidence) || {};
    const edges = confidence.edges || [];
    const counts = (confidence.counts || []).map((c) => (c > 0 ? c : null));
    const centres = counts.map((_, i) => (edges[i] + edges[i + 1]) / 2);
    const widths = counts.map((_, i) => (edges[i + 1] - edges[i]) * 0.92);
    const total = counts.reduce((n, c) => n + (c || 0), 0);
    render("plot-confidence", [{
      type: "bar", name: "items", x: centres, y: counts, width: widths, marker: { color: COLORS[0] },
      hovertemplate: "%{x:.3f}: %{y} items<extra></extra>",
    }], baseLayout({
      showlegend: false,
      margin: { l: 50, r: 14, t: 6, b: 36 },
      xaxis: { type: "linear", tickformat: ".2f", title: { text: `confidence (${total} items)`, standoff: 4 },
               range: [edges[0], edges[edges.length - 1]] },
      // most items sit in the top bin: a log scale keeps the less confident ones visible
      yaxis: { type: "log", dtick: 1, title: { text: "items (log)" } },
    }), empty);
  }

  // ---- drift, the whole app's (/drift, forwarded to the worker that hosts the monitor)
  const DRIFT_LEGEND = 5;  // features drawn in colour: the highest latest values; the rest thin and grey
  function drawDrift(drift, reason) {
    const features = Object.entries((drift && drift.features) || {});
    const thresholds = (drift && drift.thresholds) || {};
    for (const metric of ["psi", "js"]) {
      const series = features.map(([feature, f]) => {
        const rows = f.history || [];
        const ys = rows.map((r) => (isNum(r[metric]) ? r[metric] : null));
        const latest = [...ys].reverse().find(isNum);
        return { feature, x: rows.map((r) => localTime(r.window_start)), ys, latest: isNum(latest) ? latest : -1 };
      });
      const ranked = [...series].sort((a, b) => b.latest - a.latest).slice(0, DRIFT_LEGEND).map((s) => s.feature);
      const traces = series.map((s) => {
        const rank = ranked.indexOf(s.feature);
        const hover = `${s.feature}: %{y:.3f}<extra></extra>`;
        return rank >= 0
          ? line(s.feature, s.x, s.ys, COLORS[rank], { marker: { size: 5 }, hovertemplate: hover })
          : line(s.feature, s.x, s.ys, "#b1b8c0", { marker: { size: 3 }, line: { width: 1 }, showlegend: false,
            hovertemplate: hover });
      });
      traces.sort((a, b) => (a.showlegend === false ? 0 : 1) - (b.showlegend === false ? 0 : 1));
      const threshold = thresholds[metric];
      const shapes = isNum(threshold) ? [{
        type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: threshold, y1: threshold,
        line: { color: "#cf222e", width: 1.5, dash: "dash" },
      }] : [];
      const values = traces.flatMap((t) => t.y.filter(isNum));
      const top = Math.max(isNum(threshold) ? threshold * 1.3 : 0, ...values.map((v) => v * 1.08));
      // a shift far above the threshold would flatten it and every other feature onto the x axis
      const log = isNum(threshold) && top > 20 * threshold;
      const low = Math.max(1e-3, Math.min(threshold, ...values.filter((v) => v > 0)) / 1.5);
      const yaxis = log
        ? { type: "log", title: { text: `${metric.toUpperCase()} (log)` }, range: [Math.log10(low), Math.log10(top)] }
        : { title: { text: metric.toUpperCase() }, range: [0, top || 1] };
      const annotations = isNum(threshold) ? [{  // on a log axis an annotation's y is the log's
        xref: "paper", x: 0, xanchor: "left", yref: "y", y: log ? Math.log10(threshold) : threshold,
        yanchor: "bottom",
        text: `alert threshold ${threshold}`, showarrow: false, font: { color: "#cf222e", size: 10 },
      }] : [];
      const others = features.length - Math.min(features.length, DRIFT_LEGEND);
      const judged = drift && isNum(drift.windows_judged) ? ` (${drift.windows_judged} windows judged)` : "";
      render(`plot-drift-${metric}`, traces, baseLayout({
        shapes, annotations,
        legend: { orientation: "v", x: 1.01, y: 1, font: { size: 10 },
                  title: { text: others ? `grey: ${others} other features` : "", font: { size: 9 }, side: "top" } },
        margin: { l: 50, r: 8, t: 6, b: 26 },
        yaxis,
      }), reason ? `no data yet: ${reason}` : `no judged drift window yet${judged}`);
    }
  }

  // ---- model versions (the shared registry) and the shadow evaluation (the coordinator's lifecycle)
  function aliasEvents(registry) {
    if (Array.isArray(registry.alias_events) && registry.alias_events.length) return registry.alias_events;
    // an older /models without the alias log: the current aliases at their versions' creation
    return ["champion", "challenger"].filter((a) => registry[a] && registry[a].created_at).map((alias) => ({
      at: registry[alias].created_at, action: "current", alias, version: registry[alias].version, previous: null,
    }));
  }

  const ACTIONS = {
    register: { symbol: "circle", color: "#57606a", label: "registered" },
    promote: { symbol: "triangle-up", color: "#1a7f37", label: "promotion" },
    promoted: { symbol: "triangle-up", color: "#1a7f37", label: "promotion" },
    rollback: { symbol: "triangle-down", color: "#cf222e", label: "rollback" },
    set_alias: { symbol: "diamond", color: "#8250df", label: "alias set" },
    remove_alias: { symbol: "x", color: "#9a6700", label: "alias removed" },
    current: { symbol: "circle", color: "#57606a", label: "current" },
  };

  function drawModels(models, reason) {
    const registry = (models && models.registry) || {};
    const events = aliasEvents(registry)
      .map((e) => ({ ...e, ms: Date.parse(e.at) }))
      .filter((e) => Number.isFinite(e.ms))
      .sort((a, b) => a.ms - b.ms);
    const now = localTime(Date.now());
    const span = events.length ? Date.now() - events[0].ms : 0;
    const versions = [...new Set(events.flatMap((e) => [e.previous, e.version]).filter(Boolean))];
    const y = (v) => (v ? versions.indexOf(v) : null);
    const traces = [];
    for (const [i, alias] of ["champion", "challenger"].entries()) {
      const mine = events.filter((e) => e.alias === alias);
      if (!mine.length) continue;
      const xs = mine.map((e) => localTime(e.ms)), ys = mine.map((e) => y(e.version));
      traces.push(line(alias, [...xs, now], [...ys, ys[ys.length - 1]], COLORS[i], {
        line: { color: COLORS[i], width: i ? 1.6 : 2.5, shape: "hv", dash: i ? "dot" : "solid" },
        hoverinfo: "skip",
      }));
    }
    const byKind = new Map();
    for (const e of events) {
      const kind = ACTIONS[e.action] || { symbol: "circle-open", color: "#57606a", label: e.action };
      if (!byKind.has(kind.label)) byKind.set(kind.label, { kind, rows: [] });
      byKind.get(kind.label).rows.push(e);
    }
    for (const { kind, rows } of byKind.values()) {
      traces.push({
        type: "scatter", mode: "markers", name: kind.label,
        x: rows.map((e) => localTime(e.ms)), y: rows.map((e) => y(e.version) ?? y(e.previous)),
        marker: { symbol: kind.symbol, color: kind.color, size: 11, line: { color: "#fff", width: 1 } },
        text: rows.map((e) => `${e.action} ${e.alias}: ${e.previous || "–"} → ${e.version || "–"}<br>${e.at}`),
        hovertemplate: "%{text}<extra></extra>",
      });
    }
    render("plot-models", traces, baseLayout({
      xaxis: { tickformat: span < 3600e3 ? "%H:%M:%S" : span < 2 * 86400e3 ? "%H:%M" : "%d %b", nticks: 4,
               tickangle: 0 },
      yaxis: { tickvals: versions.map((_, i) => i), ticktext: versions, range: [-0.6, versions.length - 0.4],
               rangemode: "normal", tickfont: { size: 10 } },
    }), reason ? `no data yet: ${reason}` : "no model in the registry yet");
  }

  function drawShadow(models, reason) {
    const verdictLine = document.getElementById("shadow-verdict");
    const lifecycle = (models && models.lifecycle) || {};
    const inShadow = lifecycle.in_shadow;
    const cycle = (lifecycle.cycles || []).find((c) => c.version === inShadow && c.shadow) || null;
    if (!inShadow || !cycle) {
      const unavailable = reason || (lifecycle.status === "unavailable" ? lifecycle.detail : "");
      const note = unavailable ? `coordinator not available: ${unavailable}`
        : inShadow ? `challenger ${inShadow} in shadow: no items scored by both models yet`
          : "no challenger in shadow";
      render("plot-shadow", [], {}, note);
      verdictLine.textContent = "";
      return;
    }
    const s = cycle.shadow;
    const names = ["agreement rate", "champion accuracy", "challenger accuracy"];
    const values = [s.agreement_rate, s.champion_accuracy, s.challenger_accuracy];
    render("plot-shadow", [{
      type: "bar", orientation: "h", y: names, x: values,
      marker: { color: [COLORS[0], COLORS[3], COLORS[2]] }, text: values.map((v) => fmt(v)), textposition: "auto",
      hovertemplate: "%{y}: %{x:.3f}<extra></extra>",
    }], baseLayout({
      showlegend: false, margin: { l: 50, r: 16, t: 6, b: 36 },
      xaxis: { type: "linear", tickformat: "", hoverformat: "", range: [0, 1],
               title: { text: `champion ${s.champion} · challenger ${inShadow}`, standoff: 4 } },
      yaxis: { rangemode: "normal" },
    }), `challenger ${inShadow} in shadow: no items scored by both models yet`);
    verdictLine.textContent = `McNemar exact p = ${fmt(s.p_value)} (α ${s.alpha}) on ${s.b_champion_only_right}` +
      ` champion-only vs ${s.c_challenger_only_right} challenger-only right · ${s.scored} items scored by both` +
      ` (${s.min_items} needed) · ${s.significant ? "significant" : "not significant"}` +
      (cycle.decision ? ` · ${cycle.decision}` : "");
  }

  // a challenger in shadow needs a whole retraining cycle: the browser test draws this panel from a body
  state.draw = { shadow: drawShadow };

  // ---- header and status line
  function drawHeader(data, health) {
    const worker = (data && data.worker) || {};
    const h = health || {};
    const model = h.model || {};
    const parts = [
      ["app", worker.app_id || config.app_id],
      ["at", worker.url || config.url],
      ["host", worker.hostname || config.hostname],
      ["pid", worker.pid || config.pid],
      ["up", duration(isNum(worker.uptime_seconds) ? worker.uptime_seconds : h.uptime_seconds)],
      ["broker", h.broker ? h.broker.flavor : "–"],
      ["champion", model.version || "–"],
    ];
    if (model.challenger) parts.push(["challenger", model.challenger]);
    const el = document.getElementById("worker");
    el.replaceChildren(...parts.flatMap(([k, v], i) => {
      const b = document.createElement("b");
      b.textContent = String(v);
      return [document.createTextNode(`${i ? " · " : ""}${k} `), b];
    }));
  }

  function drawStatus(results) {
    const [data, drift, models, health] = results;
    const problems = [why(data, "/dashboard/data"), why(drift, "/drift"), why(models, "/models")]
      .filter(Boolean);
    const h = health.body || {};
    let level = "ok";
    const words = [];
    if (!health.body) {
      level = "down";
      words.push(`worker not answering (${why(health, "/health")})`);
    } else {
      level = h.status === "ok" ? "ok" : "degraded";
      const broker = h.broker || {};
      words.push(`${h.status}`, `broker ${broker.reachable ? "reachable" : "unreachable"} (${broker.detail})`);
      if ((h.unsubscribed_raw_topics || []).length) {
        words.push(`raw topics consumed after a restart: ${h.unsubscribed_raw_topics.join(", ")}`);
      }
    }
    if (drift.ok && drift.body) {
      const drifting = Object.entries(drift.body.features || {}).filter(([, f]) => f.status === "drift");
      words.push(drifting.length ? `drift alert on ${drifting.map(([name]) => name).join(", ")}` : "no drift");
    }
    if (problems.length && level === "ok") level = "degraded";
    words.push(...problems, `refreshed ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`);
    const status = document.getElementById("status");
    status.dataset.level = level;
    document.getElementById("status-text").textContent = words.join(" · ");
  }

  async function refresh() {
    const paths = config.paths;
    const results = await Promise.all([paths.data, paths.drift, paths.models, paths.health].map(fetchJson));
    const [data, drift, models, health] = results;
    const steps = [
      () => drawHeader(data.ok ? data.body : null, health.body),
      () => drawHistory(data.ok ? data.body : null, why(data, "/dashboard/data")),
      () => drawDrift(drift.ok ? drift.body : null, why(drift, "/drift")),
      () => drawModels(models.ok ? models.body : null, why(models, "/models")),
      () => drawShadow(models.ok ? models.body : null, why(models, "/models")),
      () => drawStatus(results),
    ];
    for (const step of steps) {
      try {
        step();
      } catch (error) {  // one broken plot must not keep the others from refreshing
        state.errors[step.toString().slice(6, 40)] = String(error);
        console.error(error);
      }
    }
    state.refreshes += 1;
    state.lastRefresh = Date.now();
    document.body.dataset.refreshes = String(state.refreshes);
  }

  async function loop() {
    await refresh();
    setTimeout(loop, REFRESH_MS);
  }
  loop();
})();

// The counter-health dashboard: polls /dashboard/data and redraws. Charts are uPlot (vendor/,
// served locally). Names from the service are set as text, never as HTML.
(function () {
  "use strict";

  const main = document.querySelector("main");
  const refreshMs = Number(main.dataset.refreshMs);
  const select = document.getElementById("namespace");
  const charts = {};

  function field(name, text) {
    document.querySelectorAll(`[data-field="${name}"]`).forEach((el) => { el.textContent = text; });
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 120) return `${value.toFixed(1)} s`;
    if (value < 7200) return `${(value / 60).toFixed(1)} min`;
    return `${(value / 3600).toFixed(1)} h`;
  }

  function time(iso) {
    return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + "Z" : "–";
  }

  function rows(tbodyId, items, cells, emptyText) {
    const body = document.getElementById(tbodyId);
    body.replaceChildren();
    if (!items.length) {
      const tr = body.insertRow();
      const td = tr.insertCell();
      td.colSpan = 4;
      td.className = "muted";
      td.textContent = emptyText;
      return;
    }
    for (const item of items) {
      const tr = body.insertRow();
      for (const value of cells(item)) tr.insertCell().textContent = value;
    }
  }

  function compact(v) {
    if (Math.abs(v) >= 1e6) return +(v / 1e6).toFixed(1) + "M";
    if (Math.abs(v) >= 1e3) return +(v / 1e3).toFixed(1) + "k";
    return String(+v.toFixed(2));
  }

  function chart(id, series, width) {
    const opts = {
      width: width,
      height: 220,
      series: [{}].concat(series.map((s) => ({ label: s.label, stroke: s.color, fill: s.color + "22", width: 2 }))),
      // Compact tick labels (800k, 1.2M): full numbers were wider than the axis and got clipped.
      axes: [{}, { size: 60, values: (u, ticks) => ticks.map(compact) }],
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    };
    return new uPlot(opts, [[], ...series.map(() => [])], document.getElementById(id));
  }

  function draw(data) {
    const width = document.getElementById("chart-rates").clientWidth || 600;
    if (!charts.rates) {
      charts.rates = chart("chart-rates", [
        { label: "ingested", color: "#2f6fdf" },
        { label: "rolled up", color: "#2e9d5b" },
      ], width);
      charts.errors = chart("chart-errors", [
        { label: "429s", color: "#e08a00" },
        { label: "failed rollups", color: "#d2413a" },
      ], width);
    }
    charts.rates.setData([data.minutes, data.series.ingest, data.series.rollup]);
    charts.errors.setData([data.minutes, data.series.throttled, data.series.rollup_failed]);
  }

  function liveness(process, beat) {
    const card = document.getElementById(`card-${process}`);
    card.className = "card " + (beat.alive ? "ok" : "bad");
    field(process, beat.age_seconds === null ? "never seen" : `${beat.alive ? "alive" : "DEAD"} · ${seconds(beat.age_seconds)} ago`);
  }

  function show(data) {
    liveness("beat", data.heartbeats.beat);
    liveness("worker", data.heartbeats.worker);
    field("ingest", data.last_hour.ingest.toLocaleString());
    field("rollup", data.last_hour.rollup.toLocaleString());
    const lag = data.lag_seconds;
    field("lag", `${seconds(lag.p50)} / ${seconds(lag.p99)} / ${seconds(lag.max)}`);
    field("lag-sample", `${lag.sampled} queued counters behind their writes, ${lag.never_rolled} never rolled up`);
    field("backlog", data.backlog.toLocaleString());
    field("oldest-due", data.oldest_due ? `oldest trigger due ${time(data.oldest_due)}` : "nothing queued");
    field("checkpoints", data.checkpoints.toLocaleString());
    field("errors", `${data.last_hour.throttled} / ${data.last_hour.rollup_failed}`);
    document.getElementById("card-errors").className =
      "card " + (data.last_hour.rollup_failed > 0 ? "bad" : "ok");
    field("stale-after", data.stale_after_seconds);
    field("horizon", time(data.retention_horizon));
    rows("queues", data.queues, (q) => [q.namespace, q.queue, q.depth], "empty");
    rows("stale", data.stale, (s) => [s.namespace, s.counter, time(s.last_rollup_ts), seconds(s.behind_seconds)], "none");
    rows("partitions", data.partitions, (p) => [p.name, time(p.start), time(p.end)], "none");
    draw(data);
    field("updated", `updated ${new Date().toLocaleTimeString()}`);
  }

  async function refresh() {
    const url = new URL(main.dataset.dataUrl, location.href);
    if (select.value) url.searchParams.set("namespace", select.value);
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      show(await response.json());
    } catch (error) {
      field("updated", `refresh failed: ${error.message}`);
    }
  }

  function describe(result) {
    const box = document.getElementById("lookup-result");
    box.replaceChildren();
    const list = document.createElement("dl");
    const entries = [
      ["count", result.count],
      ["consistency", result.counter_type],
      ["as of", time(result.as_of)],
      ["checkpoint", result.checkpoint ? `${result.checkpoint.count} at ${time(result.checkpoint.last_rollup_ts)}` : "none"],
      ["un-rolled tail", result.tail ? `${result.tail.events} events, adds ${result.tail.adds}, ${result.tail.clears} clears` : "n/a (best effort)"],
    ];
    for (const [name, value] of entries) {
      list.appendChild(document.createElement("dt")).textContent = name;
      const dd = list.appendChild(document.createElement("dd"));
      dd.textContent = value;
      dd.dataset.lookup = name;
    }
    box.appendChild(list);
    if (result.recent_events.length) {
      const table = box.appendChild(document.createElement("table"));
      const head = table.createTHead().insertRow();
      for (const title of ["id", "kind", "delta", "time"]) head.appendChild(document.createElement("th")).textContent = title;
      const body = table.createTBody();
      for (const e of result.recent_events) {
        const tr = body.insertRow();
        for (const value of [e.id, e.kind, e.delta, time(e.event_time)]) tr.insertCell().textContent = value;
      }
    }
  }

  document.getElementById("lookup-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const url = new URL(main.dataset.lookupUrl, location.href);
    url.searchParams.set("namespace", form.get("namespace"));
    url.searchParams.set("counter", form.get("counter"));
    const response = await fetch(url, { credentials: "same-origin" });
    const result = await response.json();
    if (!response.ok) {
      document.getElementById("lookup-result").textContent = result.error;
      return;
    }
    describe(result);
  });

  select.addEventListener("change", refresh);
  refresh();
  setInterval(refresh, refreshMs);
})();

// The slide viewer: OpenSeadragon shows a slide's DeepZoom pyramid, a canvas on top draws the
// overlays (level-0 px, from data/slide-<i>.js), and a click on a patch shows its attention.
// window.healnetViewer exposes the state (tests read the deepest tile level loaded).
(function () {
  "use strict";
  const index = window.HEALNET_VIEWER_INDEX;
  const state = { slide: -1, data: {}, layers: {}, selected: null, deepestLevel: -1, maxLevel: -1 };
  window.healnetViewer = state;
  document.getElementById("title").textContent = index.title;
  document.title = index.title;

  const viewer = OpenSeadragon({
    id: "osd", prefixUrl: "openseadragon/images/", drawer: "canvas", showNavigator: true,
    maxZoomPixelRatio: 2, visibilityRatio: 0.5, gestureSettingsMouse: { clickToZoom: false }, autoHideControls: false,
  });
  state.viewer = viewer;
  const overlay = document.createElement("canvas");
  overlay.id = "overlay";
  viewer.canvas.appendChild(overlay);

  // legend: the heatmaps' colour map, low (left) to high (right)
  const stops = [];
  for (let i = 0; i <= 10; i++) stops.push(index.colormap[Math.round(i * (index.colormap.length - 1) / 10)]);
  document.getElementById("ramp").style.background = "linear-gradient(to right, " + stops.join(", ") + ")";

  function colour(p) { return index.colormap[Math.min(index.colormap.length - 1, Math.floor(p * index.colormap.length))]; }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const w = viewer.container.clientWidth, h = viewer.container.clientHeight;
    if (overlay.width !== Math.round(w * ratio) || overlay.height !== Math.round(h * ratio)) {
      overlay.width = Math.round(w * ratio); overlay.height = Math.round(h * ratio);
      overlay.style.width = w + "px"; overlay.style.height = h + "px";
    }
    const ctx = overlay.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    const d = state.data[state.slide], item = viewer.world.getItemAt(0);
    if (!d || !item) return;
    // level-0 px -> canvas px: an affine map (no rotation)
    const o = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const u = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
    const k = (u.x - o.x) / 1000;
    ctx.setTransform(k * ratio, 0, 0, k * ratio, o.x * ratio, o.y * ratio);
    const view = item.viewerElementToImageCoordinates(new OpenSeadragon.Point(0, 0));
    const far = item.viewerElementToImageCoordinates(new OpenSeadragon.Point(w, h));
    const s = d.patch_size;
    const visible = (x, y) => x + s >= view.x && y + s >= view.y && x <= far.x && y <= far.y;
    if (state.layers.heat && d.attention) {
      ctx.globalAlpha = 0.45;
      const a = d.attention;
      for (let i = 0; i < a.coords.length; i++) {
        const [x, y] = a.coords[i];
        if (!visible(x, y)) continue;
        ctx.fillStyle = colour(a.percentile[i]);
        ctx.fillRect(x, y, s, s);
      }
      ctx.globalAlpha = 1;
    }
    if (state.layers.grid) {
      ctx.strokeStyle = "rgba(0, 0, 0, 0.6)";
      ctx.lineWidth = 1 / k;
      for (const [x, y] of d.patches) if (visible(x, y)) ctx.strokeRect(x, y, s, s);
    }
    const path = (polygons) => {
      ctx.beginPath();
      for (const poly of polygons) for (const ring of poly) {
        ring.forEach(([x, y], j) => (j ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        ctx.closePath();
      }
    };
    if (state.layers.pen && d.pen.length) {
      path(d.pen);
      ctx.fillStyle = "rgba(255, 0, 255, 0.35)"; ctx.fill("evenodd");
      ctx.strokeStyle = "#ff00ff"; ctx.lineWidth = 2 / k; ctx.stroke();
    }
    if (state.layers.tissue && d.tissue.length) {
      path(d.tissue);
      ctx.strokeStyle = "#00a000"; ctx.lineWidth = 2.5 / k; ctx.stroke();
    }
    if (state.selected) {
      ctx.strokeStyle = "#000"; ctx.lineWidth = 4 / k; ctx.strokeRect(state.selected.x, state.selected.y, s, s);
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 2 / k; ctx.strokeRect(state.selected.x, state.selected.y, s, s);
    }
  }
  state.draw = draw;
  ["open", "animation", "update-viewport", "resize"].forEach((e) => viewer.addHandler(e, draw));
  viewer.addHandler("tile-loaded", (e) => { state.deepestLevel = Math.max(state.deepestLevel, e.tile.level); });

  function patchAt(d, x, y) {
    const s = d.patch_size, inside = ([px, py]) => x >= px && x < px + s && y >= py && y < py + s;
    if (d.attention) {
      const i = d.attention.coords.findIndex(inside);
      if (i >= 0) return { x: d.attention.coords[i][0], y: d.attention.coords[i][1], i: i };
    }
    const j = d.patches.findIndex(inside);
    return j >= 0 ? { x: d.patches[j][0], y: d.patches[j][1], i: -1 } : null;
  }

  viewer.addHandler("canvas-click", (e) => {
    if (!e.quick) return;
    const d = state.data[state.slide], item = viewer.world.getItemAt(0);
    if (!d || !item) return;
    const p = item.viewerElementToImageCoordinates(e.position);
    const hit = patchAt(d, p.x, p.y);
    const info = document.getElementById("info");
    state.selected = hit;
    if (!hit) {
      info.textContent = "No patch at (" + Math.round(p.x) + ", " + Math.round(p.y) + ") level-0 px.";
    } else if (hit.i >= 0) {
      const a = d.attention;
      info.textContent = "Patch at x " + hit.x + ", y " + hit.y + " (level-0 px, " + d.patch_size + " px wide): attention "
        + a.value[hit.i] + ", percentile " + (100 * a.percentile[hit.i]).toFixed(1) + " % within the slide.";
    } else {
      info.textContent = "Patch at x " + hit.x + ", y " + hit.y + " (level-0 px): not in the model's bag, no attention.";
    }
    draw();
  });

  for (const name of ["tissue", "grid", "heat", "pen"]) {
    const box = document.getElementById("layer-" + name);
    state.layers[name] = box.checked;
    box.addEventListener("change", () => { state.layers[name] = box.checked; draw(); });
  }

  window.HEALNET_VIEWER_LOADED = function (i, data) {
    state.data[i] = data;
    if (i === state.slide) { showRange(data); draw(); }
  };

  function showRange(d) {
    const el = document.getElementById("range");
    if (!d.attention) { el.textContent = "No attention for this slide."; return; }
    const v = d.attention.value;
    el.textContent = v.length + " patches with attention, from " + Math.min(...v).toPrecision(3) + " to "
      + Math.max(...v).toPrecision(3);
  }

  function open(i) {
    state.slide = i; state.selected = null; state.deepestLevel = -1;
    const meta = index.slides[i];
    state.maxLevel = meta.levels - 1;
    document.querySelectorAll("#slides button").forEach((b, j) => b.classList.toggle("active", j === i));
    document.getElementById("info").textContent = "Click a patch for its attention.";
    viewer.open(meta.tileSource);
    if (state.data[i]) { showRange(state.data[i]); draw(); return; }
    const script = document.createElement("script");
    script.src = meta.data;
    document.body.appendChild(script);
  }
  state.open = open;

  const list = document.getElementById("slides");
  index.slides.forEach((s, i) => {
    const li = document.createElement("li"), b = document.createElement("button");
    b.innerHTML = "<strong></strong><span class='sub'></span>";
    b.firstChild.textContent = s.case + (s.risk === null ? "" : "  risk " + s.risk.toFixed(3));
    b.lastChild.textContent = s.id + " · " + s.n_attention + " / " + s.n_patches + " patches with attention";
    b.addEventListener("click", () => open(i));
    li.appendChild(b); list.appendChild(li);
  });
  if (index.slides.length) open(0);
})();

/* Fashion Hub storefront search: <script src="https://HUB/widget.js" data-key="hub_pk_…" async></script>
   and <fashion-hub-search></fashion-hub-search> where the search should appear. No dependencies.
   Attributes: limit (results, default 12), placeholder, min-length (default 2), key (overrides data-key),
   photo="off" (no search by photo: the camera button, or a photo dropped on the box, ranks by looks; with
   words typed too, by both — "this, but in red"; the photo is shrunk to 512 px in the browser, never stored).
   Theme with CSS custom properties on the element or above it: --fh-font, --fh-text, --fh-muted, --fh-bg,
   --fh-accent, --fh-border, --fh-radius, --fh-gap, --fh-columns (a grid-template-columns value). */
(function () {
  "use strict";
  if (window.customElements && customElements.get("fashion-hub-search")) return;
  var script = document.currentScript ||
    document.querySelector('script[src*="widget.js"][data-key]');
  var HUB = script ? new URL(script.src, location.href).origin : location.origin;
  var DEFAULT_KEY = script ? (script.getAttribute("data-key") || "") : "";

  var CSS = [
    ":host{display:block;font:inherit;font-family:var(--fh-font,inherit);color:var(--fh-text,inherit)}",
    ".box{position:relative}",
    ".row{display:flex;gap:6px;align-items:stretch}",
    "input{box-sizing:border-box;flex:1;min-width:0;width:100%;padding:.6em .8em;font:inherit;color:inherit;",
    "background:var(--fh-bg,#fff);border:1px solid var(--fh-border,#bbb);border-radius:var(--fh-radius,6px)}",
    "input:focus,button:focus{outline:2px solid var(--fh-accent,#2563eb);outline-offset:1px}",
    "button{font:inherit;color:inherit;background:var(--fh-bg,#fff);border:1px solid var(--fh-border,#bbb);",
    "border-radius:var(--fh-radius,6px);cursor:pointer;padding:0 .6em;display:flex;align-items:center}",
    "button svg{width:1.3em;height:1.3em}",
    ".chip{display:flex;align-items:center;gap:4px;border:1px solid var(--fh-border,#bbb);",
    "border-radius:var(--fh-radius,6px);padding:2px}",
    ".chip img{width:2.2em;height:2.2em;aspect-ratio:auto;border-radius:4px}",
    ".chip button{border:0;padding:0 .4em}",
    ".box[data-drop] input{outline:2px dashed var(--fh-accent,#2563eb)}",
    ".status{min-height:1.4em;margin:.5em 0;color:var(--fh-muted,#666);font-size:.9em}",
    ".status[data-state=error]{color:#b91c1c}",
    "ul{list-style:none;margin:0;padding:0;display:grid;gap:var(--fh-gap,12px);",
    "grid-template-columns:var(--fh-columns,repeat(auto-fill,minmax(140px,1fr)))}",
    "li{margin:0}",
    "a{display:block;color:inherit;text-decoration:none;border-radius:var(--fh-radius,6px);padding:4px}",
    "a:focus,a:hover{outline:2px solid var(--fh-accent,#2563eb);outline-offset:1px}",
    "img{display:block;width:100%;aspect-ratio:3/4;object-fit:cover;border-radius:var(--fh-radius,6px);",
    "background:var(--fh-border,#eee)}",
    ".name{display:block;margin-top:.35em;font-size:.9em;line-height:1.3;overflow:hidden;",
    "text-overflow:ellipsis;white-space:nowrap}",
    "[hidden]{display:none!important}"
  ].join("");

  var CAMERA = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" aria-hidden="true">' +
    '<path d="M4 8h3l2-3h6l2 3h3v11H4z"/><circle cx="12" cy="13" r="3.5"/></svg>';
  var PHOTO_SIDE = 512;  /* FashionCLIP looks at 224 px: a phone's 12 MP photo need not cross the network */

  var uid = 0;

  function shrink(file) {  /* a JPEG at most PHOTO_SIDE px on its longer side; a small photo as it is */
    if (!window.createImageBitmap) return Promise.resolve(file);
    return createImageBitmap(file).then(function (bitmap) {
      var scale = Math.min(1, PHOTO_SIDE / Math.max(bitmap.width, bitmap.height));
      if (scale === 1 && file.size <= 1048576) { if (bitmap.close) bitmap.close(); return file; }
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      if (bitmap.close) bitmap.close();
      return new Promise(function (resolve) {
        canvas.toBlob(function (blob) { resolve(blob || file); }, "image/jpeg", 0.9);
      });
    }).catch(function () { return file; });  /* not decodable here (e.g. HEIC): the hub says what it takes */
  }

  function web(url) {  /* only http(s) links and pictures: a product URL is data from a platform, never script */
    return typeof url === "string" && /^https?:\/\//i.test(url) ? url : "";
  }

  function imageUrl(item, key) {
    if (web(item.file_url)) return item.file_url + (item.file_url.indexOf("?") < 0 ? "?" : "&") +
      "key=" + encodeURIComponent(key);
    return web(item.image_url);
  }

  class FashionHubSearch extends HTMLElement {
    constructor() {
      super();
      var root = this.attachShadow({ mode: "open" });
      var id = "fh" + (++uid);
      root.innerHTML = '<style>' + CSS + '</style><div class="box" part="box">' +
        '<div class="row"><input type="search" part="input" role="combobox" aria-autocomplete="list"' +
        ' aria-expanded="false" autocomplete="off" spellcheck="false" aria-controls="' + id + '-results"' +
        ' aria-describedby="' + id + '-status"><span class="chip" part="photo-chip" hidden>' +
        '<img alt="Your photo"><button type="button" class="clear" aria-label="Remove the photo">×</button></span>' +
        '<button type="button" class="camera" part="photo-button" aria-label="Search by photo"' +
        ' title="Search by photo">' + CAMERA + '</button><input type="file" accept="image/*" hidden></div>' +
        '<div class="status" part="status" id="' + id + '-status" role="status" aria-live="polite">' +
        '</div><ul part="results" id="' + id + '-results" role="listbox" aria-label="Products" hidden></ul></div>';
      this._input = root.querySelector("input[type=search]");
      this._file = root.querySelector("input[type=file]");
      this._camera = root.querySelector(".camera");
      this._chip = root.querySelector(".chip");
      this._box = root.querySelector(".box");
      this._photo = null;  /* the shopper's photo (a Blob) while it is part of the query */
      this._photoUrl = "";
      this._photos = 0;
      this._status = root.querySelector(".status");
      this._list = root.querySelector("ul");
      this._timer = 0;
      this._controller = null;
      this._asked = "";
      var self = this;
      this._input.addEventListener("input", function () { self._schedule(); });
      this._input.addEventListener("keydown", function (event) { self._fromInput(event); });
      this._list.addEventListener("keydown", function (event) { self._inList(event); });
      this._camera.addEventListener("click", function () { self._file.click(); });
      this._file.addEventListener("change", function () {
        if (self._file.files && self._file.files[0]) self.searchByPhoto(self._file.files[0]);
        self._file.value = "";
      });
      this._chip.querySelector(".clear").addEventListener("click", function () { self.clearPhoto(); });
      this._box.addEventListener("dragover", function (event) {
        if (!self._photoAllowed()) return;
        event.preventDefault();
        self._box.setAttribute("data-drop", "");
      });
      this._box.addEventListener("dragleave", function () { self._box.removeAttribute("data-drop"); });
      this._box.addEventListener("drop", function (event) {
        self._box.removeAttribute("data-drop");
        var file = event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files[0];
        if (!self._photoAllowed() || !file) return;
        event.preventDefault();
        self.searchByPhoto(file);
      });
    }

    disconnectedCallback() { if (this._photoUrl) URL.revokeObjectURL(this._photoUrl); this._photoUrl = ""; }

    _photoAllowed() {
      var key = this._key();
      return this.getAttribute("photo") !== "off" && !this._input.disabled && key.indexOf("hub_pk_") === 0;
    }

    searchByPhoto(file) {
      if (!this._photoAllowed()) return Promise.resolve();
      if (!file || (file.type && file.type.indexOf("image/") !== 0)) {
        this._show("error", "That is not a photo: choose an image file.");
        return Promise.resolve();
      }
      var self = this;
      var n = ++this._photos;
      this._show("loading", "Reading your photo…");
      return shrink(file).then(function (photo) {
        if (n !== self._photos) return;
        if (self._photoUrl) URL.revokeObjectURL(self._photoUrl);
        self._photo = photo;
        self._photoUrl = URL.createObjectURL(photo);
        self._chip.querySelector("img").src = self._photoUrl;
        self._chip.hidden = false;
        self._asked = null;
        return self.search(self._input.value);
      });
    }

    clearPhoto(quietly) {
      if (this._photoUrl) URL.revokeObjectURL(this._photoUrl);
      this._photo = null;
      this._photoUrl = "";
      this._photos++;
      this._chip.hidden = true;
      this._asked = null;
      if (quietly) return Promise.resolve();
      this._input.focus();
      return this.search(this._input.value);
    }

    connectedCallback() {
      this._input.placeholder = this.getAttribute("placeholder") || "Search products";
      this._input.setAttribute("aria-label", this.getAttribute("label") || this._input.placeholder);
      this._camera.hidden = this.getAttribute("photo") === "off";
      var key = this._key();
      if (!key) {
        this._show("error", "Fashion Hub: no key. Add data-key=\"hub_pk_…\" to the widget's script tag.");
        this._camera.disabled = true;
      } else if (key.indexOf("hub_pk_") !== 0) {
        this._show("error", "Fashion Hub: this widget takes a publishable key (hub_pk_…). " +
          "A secret key must never be put in a web page: revoke it and use a publishable key.");
        this._input.disabled = true;
        this._camera.disabled = true;
      }
    }

    _key() { return this.getAttribute("key") || DEFAULT_KEY; }

    _limit() {
      var n = parseInt(this.getAttribute("limit") || "12", 10);
      return isFinite(n) && n > 0 ? Math.min(n, 100) : 12;
    }

    _show(state, text) {
      this._status.setAttribute("data-state", state);
      this._status.textContent = text;
      this.setAttribute("data-state", state);
    }

    _schedule() {
      clearTimeout(this._timer);
      var self = this;
      this._timer = setTimeout(function () { self.search(self._input.value); }, 250);
    }

    search(text) {
      var typed = (text || "").trim();
      var key = this._key();
      if (!key || key.indexOf("hub_pk_") !== 0) return Promise.resolve();
      var min = parseInt(this.getAttribute("min-length") || "2", 10);
      var prompt = typed.length >= (isFinite(min) ? min : 2) ? typed : "";
      var photo = this._photo;
      if (!prompt && !photo) {
        if (this._controller) this._controller.abort();
        this._asked = null;
        this._render([]);
        this._show("idle", "");
        return Promise.resolve();
      }
      var asked = (photo ? "photo " + this._photos + ":" : "words:") + prompt;
      if (asked === this._asked && this.getAttribute("data-state") === "results") return Promise.resolve();
      if (this._controller) this._controller.abort();
      var controller = this._controller = new AbortController();
      this._asked = asked;
      this._list.setAttribute("aria-busy", "true");
      this._show("loading", photo ? "Looking for products like your photo…" : "Searching…");
      var query = { limit: this._limit() };
      if (prompt) query.prompt = prompt;
      var request = { method: "POST", mode: "cors", credentials: "omit", signal: controller.signal,
                      headers: { "Authorization": "Bearer " + key } };
      if (photo) {
        request.body = new FormData();
        request.body.append("file", photo, photo.name || "photo.jpg");
        request.body.append("query", JSON.stringify(query));
      } else {
        request.headers["Content-Type"] = "application/json";
        request.body = JSON.stringify(query);
      }
      var self = this;
      return fetch(HUB + "/api/v1/recommendations" + (photo ? "/by-photo" : ""), request).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (response.ok) return body;
          var error = new Error(body.detail || ("the search answered HTTP " + response.status));
          error.status = response.status;
          throw error;
        });
      }).then(function (body) {
        if (controller !== self._controller) return;
        var results = body.results || [];
        var like = photo ? " like your photo" : "";
        self._render(results);
        if (results.length) {
          self._show("results", results.length + (results.length === 1 ? " product" : " products") + like);
        } else self._show("empty", prompt ? "Nothing matches “" + prompt + "”" + like + "." : "Nothing like your photo.");
        self.dispatchEvent(new CustomEvent("fashion-hub-results", { detail: body, bubbles: true, composed: true }));
      }).catch(function (error) {
        if (controller !== self._controller || error.name === "AbortError") return;
        self._render([]);
        self._asked = null;
        var photoRefused = photo && [413, 415, 422].indexOf(error.status) >= 0;
        self._show("error", (photoRefused ? "This photo cannot be searched (" : "Search is not available right now (") +
          (error.message || "network error") + ").");
      }).then(function () {
        if (controller === self._controller) self._list.removeAttribute("aria-busy");
      });
    }

    _render(results) {
      var list = this._list;
      var key = this._key();
      while (list.firstChild) list.removeChild(list.firstChild);
      results.forEach(function (item, index) {
        var li = document.createElement("li");
        li.setAttribute("role", "none");
        var link = document.createElement("a");
        link.setAttribute("role", "option");
        link.setAttribute("part", "result");
        link.id = list.id + "-" + index;
        link.href = web(item.product_url) || imageUrl(item, key) || "#";
        link.tabIndex = -1;
        var img = document.createElement("img");
        img.src = imageUrl(item, key);
        img.alt = item.name || "";
        img.loading = "lazy";
        img.decoding = "async";
        var name = document.createElement("span");
        name.className = "name";
        name.textContent = item.name || "";
        link.appendChild(img);
        link.appendChild(name);
        li.appendChild(link);
        list.appendChild(li);
      });
      list.hidden = results.length === 0;
      this._input.setAttribute("aria-expanded", results.length ? "true" : "false");
    }

    _links() { return Array.prototype.slice.call(this._list.querySelectorAll("a")); }

    _focus(index) {
      var links = this._links();
      if (!links.length) return;
      var i = Math.max(0, Math.min(index, links.length - 1));
      links.forEach(function (link, n) { link.tabIndex = n === i ? 0 : -1; link.setAttribute("aria-selected", n === i); });
      this._input.setAttribute("aria-activedescendant", links[i].id);
      links[i].focus();
    }

    _fromInput(event) {
      if (event.key === "ArrowDown" && this._links().length) { event.preventDefault(); this._focus(0); }
      else if (event.key === "Enter") { clearTimeout(this._timer); this.search(this._input.value); }
      else if (event.key === "Escape") { this._input.value = ""; this.clearPhoto(true); this.search(""); }
    }

    _inList(event) {
      var links = this._links();
      var at = links.indexOf(this.shadowRoot.activeElement);
      var columns = Math.max(1, Math.round(this._list.clientWidth / ((links[0] && links[0].parentNode.clientWidth) || 1)));
      var moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns, Home: -at, End: links.length };
      if (event.key === "Escape") { event.preventDefault(); this._input.removeAttribute("aria-activedescendant"); this._input.focus(); return; }
      if (!(event.key in moves)) return;
      event.preventDefault();
      if (event.key === "ArrowUp" && at - columns < 0) { this._input.focus(); return; }
      this._focus(at + moves[event.key]);
    }
  }

  customElements.define("fashion-hub-search", FashionHubSearch);
})();

// The dashboard's state and behaviour (docs/dashboard.md). One Alpine component; every number it
// shows comes from the public REST API in the seed's envelope, live changes from /api/live/events.
"use strict";

const SECTIONS = ["live", "events", "review", "models", "datasets", "settings", "system", "analytics"];
const TYPES = ["person", "package", "delivery_food", "mail", "unclassified"];
// Values a setting may take where the API accepts a closed set (schemas/settings.py, PipelineKnobs).
const SETTING_CHOICES = {
  resolution: ["1920x1080", "1280x720", "640x480"],
  sensitivity: ["low", "medium", "high"],
  log_level: ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
  profile: ["default", "tiny"],
};
const BOX_COLOURS = { person: "#50c850", package: "#ff8c00", delivery_food: "#e0409a", mail: "#3d7cf0", unclassified: "#9aa0a6" };

class ApiError extends Error {
  constructor(status, envelope) {
    const error = (envelope && envelope.error) || {};
    super(error.message || (envelope && envelope.message) || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.details = error.details;
  }
}

// The session's CSRF token (GET /api/auth/me): every write sends it (docs/security.md).
let csrfToken = null;

function toLogin() {
  location.href = "/login?next=" + encodeURIComponent(location.pathname + location.hash);
}

// One call of the public API; resolves to the envelope's data, rejects with ApiError.
async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (method !== "GET" && csrfToken) init.headers["X-CSRF-Token"] = csrfToken;
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  let envelope = null;
  try {
    envelope = await response.json();
  } catch (_) {
    /* not JSON: the status says it */
  }
  if (response.status === 401) toLogin(); // no session (or it expired): sign in again
  if (!response.ok || (envelope && envelope.success === false)) throw new ApiError(response.status, envelope);
  return envelope ? envelope.data : null;
}

function query(params) {
  const parts = Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined);
  return parts.length ? "?" + new URLSearchParams(parts).toString() : "";
}

// Line diff (longest common subsequence) of two small texts: [{op: " "|"-"|"+", text}].
function lineDiff(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--) lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push({ op: " ", text: x[i] }); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push({ op: "-", text: x[i++] });
    else out.push({ op: "+", text: y[j++] });
  }
  while (i < n) out.push({ op: "-", text: x[i++] });
  while (j < m) out.push({ op: "+", text: y[j++] });
  return out;
}

// The settings field a validation message is about: msgspec says "... - at `$.fps`", the service
// lists unknown keys as details [{key}].
function fieldOfError(err) {
  const found = /at `\$\.([A-Za-z0-9_]+)/.exec(err.message || "");
  if (found) return found[1];
  const first = Array.isArray(err.details) ? err.details.find((d) => d && d.key) : null;
  return first ? first.key : null;
}

document.addEventListener("alpine:init", () => {
  window.Alpine.data("dashboard", () => ({
    texts: window.AIDOOR_TEXTS,
    lang: localStorage.getItem("aidoor.lang") || ((navigator.language || "en").toLowerCase().startsWith("ko") ? "ko" : "en"),
    sections: SECTIONS,
    types: TYPES,
    section: "live",
    streamOnline: false,
    notice: "",
    noticeError: false,
    // Live
    detection: null,
    components: {}, // component -> {status, reason}, from the live stream
    // Events
    eventFilter: { type: "", status: "", from: "", to: "", camera: "" },
    cameras: [], // [{id, name}] of /api/cameras: the events' camera chip and filter (shown with 2+ cameras)
    eventPage: { items: [], total: 0, page: 1, limit: 12 },
    newEvents: 0,
    selected: null,
    // Review
    queue: [],
    queueTotal: 0,
    reviewIndex: 0,
    retrain: { min: null, count: 0, queued: false, auto: true },
    // Models
    modelList: [],
    forceDeploy: false,
    training: null,
    trainForm: { dataset_id: "", epochs: 10, batch_size: 16, imgsz: 640, profile: "default", auto_deploy: false },
    // Datasets
    datasetList: [],
    dataset: null,
    yamlVersions: [],
    diffPair: { a: "", b: "" },
    diffLines: [],
    roboflow: { project_name: "", version: 1 },
    // Settings
    settingsData: {},
    settingsForm: {},
    fieldErrors: {},
    categoryMessages: {},
    recipients: [],
    recipientForm: { chat_id: "", bot_token: "" },
    templateList: [],
    testText: "테스트 알림",
    // System
    health: null,
    sysStatus: null,
    performance: null,
    storageReport: null,
    logs: [],
    batchJobs: null,
    // Analytics
    statsPeriod: "week",
    statsGroup: "hour",
    stats: null,
    patterns: null,
    anomalies: null,
    reports: null,
    visitors: null,
    reportType: "daily_summary",
    unavailable: {},
    me: null,

    async init() {
      document.documentElement.lang = this.lang;
      try {
        this.me = await api("GET", "/api/auth/me");
      } catch (_) {
        return; // 401: api() went to the login page
      }
      if (this.me.password_change_required) return toLogin();
      csrfToken = this.me.csrf_token;
      window.addEventListener("hashchange", () => this.route());
      window.addEventListener("keydown", (e) => this.onKey(e));
      this.route();
      this.connectStream();
    },

    async logout() {
      await api("POST", "/api/auth/logout").catch(() => null);
      location.href = "/login";
    },

    t(key) {
      return (this.texts[this.lang] && this.texts[this.lang][key]) || this.texts.en[key] || key;
    },
    setLang(lang) {
      this.lang = lang;
      localStorage.setItem("aidoor.lang", lang);
      document.documentElement.lang = lang;
    },
    say(message, isError = false) {
      this.notice = message;
      this.noticeError = isError;
    },
    async guard(work) {
      try {
        return await work();
      } catch (err) {
        this.say(err.message, true);
        return undefined;
      }
    },

    route() {
      const name = (location.hash.replace(/^#\/?/, "") || "live").split("/")[0];
      this.section = SECTIONS.includes(name) ? name : "live";
      this.notice = "";
      this.selected = null;
      const loaders = {
        live: () => this.loadLive(),
        events: () => {
          this.loadCameras();
          this.loadEvents();
        },
        review: () => this.loadReview(),
        models: () => this.loadModels(),
        datasets: () => this.loadDatasets(),
        settings: () => this.loadSettings(),
        system: () => this.loadSystem(),
        analytics: () => this.loadAnalytics(),
      };
      loaders[this.section]();
    },

    // ---------------------------------------------------------------- live updates (SSE)
    connectStream() {
      const source = new EventSource("/api/live/events");
      source.onopen = () => (this.streamOnline = true);
      source.onerror = () => (this.streamOnline = false); // EventSource retries by itself
      source.addEventListener("detection", (e) => {
        this.detection = { ...(this.detection || {}), ...JSON.parse(e.data) };
      });
      source.addEventListener("training", (e) => (this.training = JSON.parse(e.data)));
      source.addEventListener("components", (e) => {
        const states = JSON.parse(e.data);
        this.components = states;
        if (this.sysStatus && this.sysStatus.components)
          for (const [name, state] of Object.entries(states))
            if (this.sysStatus.components[name]) Object.assign(this.sysStatus.components[name], state);
      });
      const changed = () => {
        if (this.section === "events") this.refreshEventsLive();
        if (this.section === "review") this.loadReview();
      };
      source.addEventListener("event_created", () => {
        this.newEvents++;
        changed();
      });
      source.addEventListener("event_updated", changed);
      source.addEventListener("package_removed", changed);
    },

    // ---------------------------------------------------------------- Live
    async loadLive() {
      const data = await this.guard(() => api("GET", "/api/detection"));
      if (data) this.detection = data;
    },
    async control(action) {
      const data = await this.guard(() => api("POST", `/api/detection/${action}`));
      if (data) {
        this.detection = data;
        this.say(`${this.t(action)}: ${data.status}`);
      }
    },

    // ---------------------------------------------------------------- Events
    eventQuery(page) {
      const f = this.eventFilter;
      const range = f.from || f.to ? `${f.from}/${f.to}` : "";
      return query({
        page, limit: this.eventPage.limit, type: f.type, status: f.status, date_range: range, camera_id: f.camera,
      });
    },
    async loadCameras() {
      const data = await api("GET", "/api/cameras").catch(() => null);
      if (data) this.cameras = data.map((c) => ({ id: c.id, name: c.name }));
    },
    cameraName(id) {
      const camera = this.cameras.find((c) => c.id === id);
      return camera ? camera.name : `#${id}`;
    },
    async loadEvents(page = 1) {
      const data = await this.guard(() => api("GET", "/api/events" + this.eventQuery(page)));
      if (data) {
        this.eventPage = data;
        this.newEvents = 0;
      }
    },
    refreshEventsLive() {
      // Several frames in a burst cost one request: the first schedules, the rest join it.
      if (this._refreshTimer) return;
      this._refreshTimer = setTimeout(() => {
        this._refreshTimer = null;
        if (this.eventPage.page === 1) this.loadEvents(1);
      }, 300);
    },
    pages() {
      return Math.max(1, Math.ceil(this.eventPage.total / this.eventPage.limit));
    },
    async openEvent(id) {
      const data = await this.guard(() => api("GET", `/api/events/${id}`));
      if (data) this.selected = data;
    },
    // The box of one capture: its own under bbox.frames, else the main one (capture 1).
    boxOf(event, image) {
      const bbox = event && event.bbox;
      if (!bbox) return null;
      const own = bbox.frames && bbox.frames[String(image.sequence_number)];
      if (own) return own;
      return image.sequence_number === 1 && "x1" in bbox ? bbox : null;
    },
    drawBox(svg, img, box, type) {
      // Pixel boxes on the image's own pixel grid: the SVG takes the image's natural size as viewBox.
      if (!box || !img.naturalWidth) return;
      svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
      const rect = svg.querySelector("rect");
      rect.setAttribute("x", box.x1);
      rect.setAttribute("y", box.y1);
      rect.setAttribute("width", Math.max(1, box.x2 - box.x1));
      rect.setAttribute("height", Math.max(1, box.y2 - box.y1));
      rect.setAttribute("stroke", BOX_COLOURS[type] || "#fff");
      rect.setAttribute("stroke-width", Math.max(2, img.naturalWidth / 200));
      rect.style.display = "";
    },
    // Korean: the name the API gives (object_types.name); English: our own label.
    typeLabel(code, apiName) {
      if (this.lang === "ko" && apiName) return apiName;
      const key = `type_${code}`;
      const label = this.t(key);
      return label === key ? apiName || code : label;
    },
    colour(type) {
      return BOX_COLOURS[type] || "#9aa0a6";
    },
    when(value) {
      return value ? new Date(value).toLocaleString(this.lang === "ko" ? "ko-KR" : "en-GB") : "-";
    },
    percent(value) {
      return value === null || value === undefined ? "-" : `${Math.round(value * 100)}%`;
    },
    number(value, digits = 3) {
      return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
    },

    // ---------------------------------------------------------------- Review
    async loadReview() {
      const data = await this.guard(() => api("GET", "/api/events/images/unclassified" + query({ limit: 100 })));
      if (!data) return;
      // The listing is per capture; the queue is per event (its first capture listed).
      const byEvent = new Map();
      for (const image of data.items) if (!byEvent.has(image.event_id)) byEvent.set(image.event_id, image);
      this.queue = [...byEvent.values()];
      this.queueTotal = this.queue.length;
      this.reviewIndex = Math.min(this.reviewIndex, Math.max(0, this.queue.length - 1));
      this.loadRetrainProgress();
    },
    async loadRetrainProgress() {
      // The retrain sensor's own count (verified labels since the last training or auto-collection).
      const status = await api("GET", "/api/models/retrain/status").catch(() => null);
      if (!status) return;
      this.retrain = { min: status.retrain_min_new_labels, count: status.new_verified_labels, queued: status.queued, auto: status.auto_retrain };
    },
    async classify(eventId, body) {
      const data = await this.guard(() => api("PUT", `/api/detections/${eventId}/classify`, body));
      if (data) {
        this.say(`#${eventId}: ${data.type}${data.is_false_positive ? " (" + this.t("false_positive") + ")" : ""}`);
        if (this.selected && this.selected.id === eventId) this.selected = data;
        if (this.section === "review") await this.loadReview();
        if (this.section === "events") await this.loadEvents(this.eventPage.page);
      }
    },
    relabel(eventId, type) {
      return this.classify(eventId, { type, verified: true, false_positive: false });
    },
    markFalsePositive(eventId, type) {
      return this.classify(eventId, { type: type || "unclassified", verified: true, false_positive: true });
    },
    markVerified(eventId, type) {
      return this.classify(eventId, { type, verified: true, false_positive: false });
    },
    onKey(e) {
      if (this.section !== "review" || !this.queue.length) return;
      if (["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) return;
      const item = this.queue[this.reviewIndex];
      if (e.key >= "1" && e.key <= "4") this.relabel(item.event_id, TYPES[Number(e.key) - 1]);
      else if (e.key === "5") this.markFalsePositive(item.event_id);
      else if (e.key === "v" || e.key === "V") this.markVerified(item.event_id, item.object_type);
      else if (e.key === "ArrowDown" || e.key === "j") this.reviewIndex = Math.min(this.queue.length - 1, this.reviewIndex + 1);
      else if (e.key === "ArrowUp" || e.key === "k") this.reviewIndex = Math.max(0, this.reviewIndex - 1);
      else return;
      e.preventDefault();
    },

    // ---------------------------------------------------------------- Models
    async loadModels() {
      const [models, training, datasets] = await Promise.all([
        this.guard(() => api("GET", "/api/models/versions")),
        api("GET", "/api/models/train/status").catch(() => null),
        api("GET", "/api/datasets").catch(() => []),
      ]);
      if (models) this.modelList = models;
      this.training = training;
      this.datasetList = datasets || [];
      if (!this.trainForm.dataset_id && this.datasetList.length) this.trainForm.dataset_id = this.datasetList[0].dataset_id;
    },
    gateText(model) {
      const gate = model.gate;
      if (!gate) return "-";
      const verdict = gate.passed === true ? "pass" : gate.passed === false ? "fail" : "";
      return [verdict, gate.reason].filter(Boolean).join(": ");
    },
    async deploy(model) {
      const data = await this.guard(() =>
        api("POST", `/api/models/${encodeURIComponent(model.model_id)}/deploy`, { force: this.forceDeploy })
      );
      if (data) {
        this.say(`${data.model.model_id} ${this.t("current")}`);
        await this.loadModels();
      }
    },
    async startTraining() {
      const body = { ...this.trainForm };
      for (const key of ["epochs", "batch_size", "imgsz"]) body[key] = body[key] === "" ? null : Number(body[key]);
      const data = await this.guard(() => api("POST", "/api/models/train", body));
      if (data) {
        this.training = data;
        this.say(this.t("start_training") + ": #" + data.id);
      }
    },
    async cancelTraining() {
      const data = await this.guard(() => api("DELETE", "/api/models/train/cancel"));
      if (data) this.training = data;
    },
    trainingRunning() {
      return this.training && ["pending", "running", "queued"].includes(this.training.status);
    },

    // ---------------------------------------------------------------- Datasets
    async loadDatasets() {
      const data = await this.guard(() => api("GET", "/api/datasets"));
      if (!data) return;
      this.datasetList = data;
      const keep = this.dataset && data.find((d) => d.id === this.dataset.id);
      if (keep || data.length) await this.openDataset((keep || data[0]).dataset_id);
    },
    async openDataset(ref) {
      const detail = await this.guard(() => api("GET", `/api/datasets/${encodeURIComponent(ref)}`));
      if (!detail) return;
      this.dataset = detail;
      this.diffLines = [];
      this.yamlVersions = (await api("GET", `/api/datasets/${encodeURIComponent(ref)}/yaml/versions`).catch(() => [])) || [];
      const ids = this.yamlVersions.map((v) => String(v.id));
      this.diffPair = { a: ids[1] || ids[0] || "", b: ids[0] || "" };
    },
    distribution(dist) {
      // class_distribution: {name: count} (or {name: {count}}): bars relative to the largest.
      const rows = Object.entries(dist || {}).map(([name, v]) => [name, typeof v === "number" ? v : (v && (v.count ?? v.instances ?? v.images)) || 0]);
      const top = Math.max(1, ...rows.map((r) => r[1]));
      return rows.map(([name, count]) => ({ name, count, width: Math.round((100 * count) / top) }));
    },
    async compareYaml() {
      const ref = encodeURIComponent(this.dataset.dataset_id);
      const [a, b] = await Promise.all(
        [this.diffPair.a, this.diffPair.b].map((id) => this.guard(() => api("GET", `/api/datasets/${ref}/yaml/${id}`)))
      );
      if (a && b) this.diffLines = lineDiff(a.yaml_content || "", b.yaml_content || "");
    },
    async uploadExport(input) {
      if (!input.files.length || !this.dataset) return;
      const form = new FormData();
      form.append("file", input.files[0]);
      const data = await this.guard(() => api("PUT", `/api/datasets/${encodeURIComponent(this.dataset.dataset_id)}/update`, form));
      input.value = "";
      if (data) {
        this.say(this.t("upload") + ": " + (data.version || data.dataset_id || "OK"));
        await this.openDataset(this.dataset.dataset_id);
      }
    },
    async syncRoboflow() {
      const body = { project_name: this.roboflow.project_name, version: Number(this.roboflow.version) };
      const data = await this.guard(() => api("POST", "/api/datasets/roboflow/sync", body));
      if (data) this.say(this.t("roboflow_sync") + ": #" + (data.id || data.batch_job_id || ""));
    },

    // ---------------------------------------------------------------- Settings
    async loadSettings() {
      const [all, recipients, templates] = await Promise.all([
        this.guard(() => api("GET", "/api/settings")),
        api("GET", "/api/notifications/recipients").catch(() => []),
        api("GET", "/api/notifications/templates").catch(() => []),
      ]);
      if (all) {
        this.settingsData = all;
        this.settingsForm = JSON.parse(JSON.stringify(all));
        this.fieldErrors = {};
        this.categoryMessages = {};
      }
      this.recipients = recipients || [];
      this.templateList = templates || [];
    },
    fieldKind(value, key) {
      if (SETTING_CHOICES[key]) return "choice";
      if (typeof value === "boolean") return "bool";
      if (typeof value === "number") return "number";
      if (Array.isArray(value)) return "list";
      return "text";
    },
    choices(key) {
      return SETTING_CHOICES[key] || [];
    },
    toggleInList(category, key, item) {
      const list = this.settingsForm[category][key];
      const at = list.indexOf(item);
      if (at >= 0) list.splice(at, 1);
      else list.push(item);
    },
    async saveCategory(category) {
      // Send only what changed: the API validates the category as a whole and stores all or nothing.
      const form = this.settingsForm[category], stored = this.settingsData[category], changes = {};
      for (const [key, value] of Object.entries(form)) {
        const typed = typeof stored[key] === "number" && value !== "" && !isNaN(Number(value)) ? Number(value) : value;
        if (JSON.stringify(typed) !== JSON.stringify(stored[key])) changes[key] = typed;
      }
      this.fieldErrors[category] = {};
      try {
        const data = await api("PUT", `/api/settings/${category}`, changes);
        this.settingsData[category] = data;
        this.settingsForm[category] = JSON.parse(JSON.stringify(data));
        this.categoryMessages[category] = { text: this.t("saved"), error: false };
      } catch (err) {
        const field = fieldOfError(err);
        if (field) this.fieldErrors[category] = { [field]: err.message };
        this.categoryMessages[category] = { text: field ? "" : err.message, error: true };
      }
    },
    async addRecipient() {
      const data = await this.guard(() => api("POST", "/api/notifications/recipients", this.recipientForm));
      if (data) {
        this.recipientForm = { chat_id: "", bot_token: "" };
        this.recipients = await api("GET", "/api/notifications/recipients");
      }
    },
    async removeRecipient(id) {
      const data = await this.guard(() => api("DELETE", `/api/notifications/recipients/${id}`));
      if (data !== undefined) this.recipients = await api("GET", "/api/notifications/recipients");
    },
    async saveTemplate(template) {
      const body = { message_text: template.message_text, is_active: template.is_active };
      const data = await this.guard(() => api("PUT", `/api/notifications/templates/${template.template_key}`, body));
      if (data) this.say(`${template.template_key}: ${this.t("saved")}`);
    },
    async sendTest() {
      const data = await this.guard(() => api("POST", "/api/notifications/send", { text: this.testText }));
      if (data !== undefined) this.say(this.t("test_alert") + ": " + this.t("sent"));
    },

    // ---------------------------------------------------------------- System
    async optional(key, path) {
      // Endpoints other work adds over time: a 404 shows "not available", nothing breaks.
      try {
        const data = await api("GET", path);
        this.unavailable[key] = false;
        return data;
      } catch (err) {
        this.unavailable[key] = true;
        return null;
      }
    },
    async loadSystem() {
      const [health, status, performance, storage, logs, jobs] = await Promise.all([
        this.optional("health", "/api/system/health"),
        this.optional("status", "/api/system/status"),
        this.optional("performance", "/api/system/performance"),
        this.optional("storage", "/api/system/storage"),
        this.optional("logs", "/api/system/logs?limit=20"),
        this.optional("batch", "/api/batch/jobs?limit=20"),
      ]);
      this.health = health;
      this.sysStatus = status;
      this.performance = performance;
      this.storageReport = storage;
      this.logs = (logs && (logs.items || logs)) || [];
      this.batchJobs = jobs && (jobs.items || jobs);
    },
    dagsterUrl() {
      const dagster = this.health && this.health.components && this.health.components.dagster;
      const target = dagster && dagster.target;
      return target && /^https?:\/\//.test(target) ? target : "http://127.0.0.1:3000";
    },
    dagsterRunUrl(runId) {
      return `${this.dagsterUrl().replace(/\/$/, "")}/runs/${runId}`;
    },
    bytes(value) {
      if (value === null || value === undefined) return "-";
      const units = ["B", "KB", "MB", "GB", "TB"];
      let n = Number(value), u = 0;
      while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
      return `${n.toFixed(u ? 1 : 0)} ${units[u]}`;
    },
    // Performance history as small column charts: per metric, the component that sampled it most.
    perfSeries() {
      const history = (this.performance && this.performance.history) || {};
      const out = [];
      for (const metric of ["cpu_usage", "memory_usage", "fps", "gpu_usage", "disk_usage"]) {
        let best = null;
        for (const [component, samples] of Object.entries(history)) {
          const values = (samples || []).map((s) => s[metric]).filter((v) => v !== null && v !== undefined);
          if (values.length && (!best || values.length > best.values.length)) best = { component, values };
        }
        if (!best) continue;
        const values = best.values.slice(-60);
        const top = Math.max(1e-9, ...values);
        out.push({
          name: metric, component: best.component, last: Number(values[values.length - 1]).toFixed(1),
          points: values.map((v) => ({ v, h: Math.max(2, (100 * v) / top) })),
        });
      }
      return out;
    },
    // Flat rows of a nested JSON object: [["a.b", value]] (status/performance answers vary).
    flat(obj, prefix = "", out = []) {
      for (const [key, value] of Object.entries(obj || {})) {
        const name = prefix ? `${prefix}.${key}` : key;
        if (value && typeof value === "object" && !Array.isArray(value)) this.flat(value, name, out);
        else if (Array.isArray(value)) out.push([name, `[${value.length}]`]);
        else if (value === null || value === undefined) out.push([name, "-"]);
        else if (/(^|_)bytes$/.test(key) && typeof value === "number") out.push([name, this.bytes(value)]);
        else out.push([name, String(value)]);
      }
      return out.slice(0, 60);
    },

    // ---------------------------------------------------------------- Analytics
    async loadAnalytics() {
      const [stats, patterns, anomalies, visitors] = await Promise.all([
        this.optional("statistics", "/api/analytics/statistics" + query({ period: this.statsPeriod, group_by: this.statsGroup })),
        this.optional("patterns", "/api/analytics/patterns" + query({ period: "month" })),
        this.optional("anomalies", "/api/analytics/anomalies" + query({ days: 7 })),
        this.optional("visitors", "/api/analytics/frequent-visitors" + query({ days: 30, limit: 12 })),
      ]);
      this.stats = stats;
      this.patterns = patterns;
      this.anomalies = anomalies;
      this.visitors = visitors;
    },
    // Only on request: asking for a report that does not exist yet queues the batch job that makes it.
    async loadReport() {
      this.reports = await this.optional("reports", "/api/analytics/reports" + query({ type: this.reportType }));
    },
    reportLink(format) {
      const period = this.reports && this.reports.period;
      return "/api/analytics/reports" + query({ type: this.reportType, period, format });
    },
    weekday(index) {
      return (this.lang === "ko" ? "월화수목금토일" : "MTWTFSS")[index] || "";
    },
    // The heatmap's row labels (Monday = 0, as the API counts): short names, unambiguous in English.
    weekdayName(index) {
      return (this.lang === "ko" ? "월화수목금토일".split("") : ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])[index] || "";
    },
    hoursText(hours) {
      return hours && hours.length ? hours.map((h) => String(h).padStart(2, "0") + "h").join(", ") : "-";
    },
    // Show the visitor's box of the whole capture in the thumbnail frame (scaled to fit, centred).
    cropTo(img, box) {
      const frame = img.parentElement;
      const bw = box.x2 - box.x1, bh = box.y2 - box.y1;
      if (!frame || bw <= 0 || bh <= 0) return;
      const scale = Math.min(frame.clientWidth / bw, frame.clientHeight / bh);
      Object.assign(img.style, {
        width: img.naturalWidth * scale + "px",
        height: img.naturalHeight * scale + "px",
        left: (frame.clientWidth - bw * scale) / 2 - box.x1 * scale + "px",
        top: (frame.clientHeight - bh * scale) / 2 - box.y1 * scale + "px",
      });
    },
    statRows() {
      const groups = (this.stats && (this.stats.groups || this.stats.items || this.stats.rows)) || [];
      const rows = groups.map((g) => ({ label: String(g.key ?? g.group ?? g.type ?? g.hour ?? g.label ?? ""), count: g.count || 0 }));
      const top = Math.max(1, ...rows.map((r) => r.count));
      return rows.map((r, i) => ({ ...r, i, height: (100 * r.count) / top }));
    },
    // One row per weekday, Monday first: [{w, cells: [{w, h, count, alpha}]}].
    heatRows() {
      const cells = this.heatCells();
      return [0, 1, 2, 3, 4, 5, 6].map((w) => ({ w, cells: cells.slice(24 * w, 24 * w + 24) }));
    },
    // Hour x weekday cells of every type together: [{weekday, hour, count, alpha}].
    heatCells() {
      const grid = {};
      const hist = (this.patterns && (this.patterns.histograms || this.patterns.histogram)) || {};
      const add = (w, h, c) => (grid[`${w}-${h}`] = (grid[`${w}-${h}`] || 0) + c);
      for (const perType of Object.values(hist)) {
        if (Array.isArray(perType)) perType.forEach((row, w) => Array.isArray(row) && row.forEach((c, h) => add(w, h, Number(c) || 0)));
        else if (perType && Array.isArray(perType.counts)) perType.counts.forEach((row, w) => row.forEach((c, h) => add(w, h, Number(c) || 0)));
      }
      const top = Math.max(1, ...Object.values(grid));
      const cells = [];
      for (let w = 0; w < 7; w++) for (let h = 0; h < 24; h++) cells.push({ w, h, count: grid[`${w}-${h}`] || 0, alpha: (grid[`${w}-${h}`] || 0) / top });
      return cells;
    },
    anomalyRows() {
      return (this.anomalies && (this.anomalies.items || this.anomalies.anomalies)) || [];
    },
  }));
});

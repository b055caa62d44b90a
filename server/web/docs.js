// /docs: Swagger UI from the app's own assets, given the admin token the schema needs.

const KEY = "voice-admin-token";
const form = document.querySelector("#docs-token");
const input = document.querySelector("#admin-token");
const status = document.querySelector("#docs-status");

function load(token) {
  status.textContent = "Loading…";
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Every request Swagger UI makes (the schema, "Try it out") carries the token.
    requestInterceptor: (request) => {
      if (token) request.headers.Authorization = `Bearer ${token}`;
      return request;
    },
    onComplete: () => {
      status.textContent = "";
      document.body.dataset.docs = "loaded";
    },
  });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = input.value.trim();
  sessionStorage.setItem(KEY, token);
  load(token);
});

window.addEventListener("load", () => {
  input.value = sessionStorage.getItem(KEY) || "";
  if (input.value) load(input.value);
  else input.focus();
});

// Form behaviour for every page, declared in the markup because the Content-Security-Policy refuses
// inline handlers:
//   <form data-confirm="Delete x?">  asks first; Cancel keeps the form unsent.
//   <select data-autosubmit>, <input type="checkbox" data-autosubmit>  send their form when changed.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
  document.addEventListener("change", function (event) {
    const control = event.target;
    if (!control.matches || !control.matches("[data-autosubmit]") || !control.form) return;
    // requestSubmit() fires "submit" (so a data-confirm on the form still asks) and checks validity.
    control.form.requestSubmit();
  });
})();

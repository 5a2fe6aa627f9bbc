"""One function per page that builds its template context as a plain, JSON-able dict.

The service worker has a twin of each, fed from IndexedDB instead of the database.
"""

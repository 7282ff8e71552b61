"""The Gradio demo: settings, EXIF reading, the Folium map and the Blocks UI (``app.py`` starts it)."""

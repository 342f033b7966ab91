from django.urls import path

from batches import views

app_name = "batches"
urlpatterns = [
    path("batches/", views.batch_list, name="list"),
    path("batches/new", views.batch_new, name="new"),
    path("batches/<int:batch_id>/", views.batch_detail, name="detail"),
    path("batches/<int:batch_id>/progress", views.batch_status, name="progress"),
    path("batches/<int:batch_id>/cancel", views.batch_cancel, name="cancel"),
]

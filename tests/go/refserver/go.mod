module refserver

go 1.19

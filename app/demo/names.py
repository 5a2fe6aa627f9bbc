"""Word lists for demo patients."""
FEMALE_NAMES = ["Amina", "Wanjiku", "Achieng", "Fatuma", "Grace", "Mercy", "Faith", "Joy", "Zawadi",
                "Neema", "Halima", "Esther", "Ruth", "Mary", "Aisha", "Nafula", "Chebet", "Akinyi"]
MALE_NAMES = ["Baraka", "Otieno", "Kiprono", "Hassan", "John", "Peter", "Juma", "Musa", "Daniel",
              "Brian", "Kevin", "Omondi", "Kamau", "Mutua", "Ali", "Joseph", "David", "Ochieng"]
FAMILY_NAMES = ["Mwangi", "Odhiambo", "Kiptoo", "Wafula", "Njoroge", "Onyango", "Kariuki", "Mohamed",
                "Chepkoech", "Mutiso", "Wekesa", "Ndungu", "Owino", "Barasa", "Kimani", "Nyambura",
                "Korir", "Langat", "Omar", "Wambui", "Gitau", "Auma", "Rotich", "Mugo"]
VILLAGES = ["Riverside", "Market Road", "Kijiji A", "Hill View", "Station Lane", "Mto Mdogo",
            "School Road", "Chief's Camp"]
PROBLEMS = [("Malaria, uncomplicated", "B54"), ("Upper respiratory tract infection", "J06.9"),
            ("Essential hypertension", "I10"), ("Type 2 diabetes mellitus", "E11.9"),
            ("Urinary tract infection", "N39.0"), ("Gastroenteritis", "A09"),
            ("Asthma", "J45.9"), ("Iron deficiency anaemia", "D50.9")]
MEDICATIONS = [("Artemether/lumefantrine 20/120 mg", "4 tablets", "twice daily"),
               ("Amoxicillin 500 mg", "1 capsule", "three times daily"),
               ("Paracetamol 500 mg", "2 tablets", "every 6 hours as needed"),
               ("Amlodipine 5 mg", "1 tablet", "once daily"),
               ("Metformin 500 mg", "1 tablet", "twice daily"),
               ("Oral rehydration salts", "1 sachet", "after each loose stool")]
